"""``quantize``: quantization-aware training (QAT) of a model into a real int8 model (STKD
Table 8's baseline), with its accuracy, size, latency and energy per sample beside the
float model's (:mod:`compressflow.nn.quantization`)."""

from __future__ import annotations

import hashlib
import inspect
import io
import itertools
import warnings
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from compressflow.errors import InputError, SpecError
from compressflow.ops import (Artifact, ModelName, OpContext, Record, Schedule, Width, check_schedule, curves,
                              load_checkpoint, load_weights, model_costs, with_units)
from compressflow.registries import OPS
from compressflow.rundir.files import atomic_write_bytes

if TYPE_CHECKING:
    import torch

__all__ = ["load_int8", "quantize"]

Backend = Literal["x86", "fbgemm", "qnnpack"]
Fraction = Annotated[float, Field(ge=0, le=1)]
UNITS = {"model_bytes": "bytes (torch.save of the state dict)", "latency_s": "s/sample (median over rounds)",
         "inference_energy_kwh": "kWh/sample (as metered: CPU+GPU+RAM of the task's process)", "size_ratio": "1",
         "speedup": "1 (fp32 latency / int8 latency)", "fake_quant_accuracy": "1",
         "pretrained_accuracy": "1"}


def _check_spec(spec: Any, name: str) -> None:
    """A QAT stage fine-tuning a checkpoint takes its architecture from it: ``model`` and
    ``width`` beside ``needs: {pretrained: ...}`` would be ignored, so they are refused."""
    st = spec.stages[name]
    _check_phases(st, name)
    if "pretrained" in st.needs:
        for param in ("model", "width"):
            if param in st.params or param in st.sweep:
                raise SpecError(f"stages.{name}.params.{param}: quantize takes the architecture from its pretrained "
                                f"checkpoint (needs.pretrained: {st.needs['pretrained']!r}); drop {param}, or drop "
                                f"needs.pretrained to train {param} from scratch")
    else:
        check_schedule(spec, name)  # from scratch: the schedule must leave epochs at the base rate


def _check_phases(st: Any, name: str) -> None:
    order = ("quant_delay", "freeze_bn_at", "freeze_observers_at")
    defaults = {k: inspect.signature(quantize).parameters[k].default for k in order}
    choices = [st.sweep.get(k, [st.params.get(k, defaults[k])]) for k in order]
    for values in itertools.product(*choices):
        for (a, va), (b, vb) in zip(zip(order, values), list(zip(order, values))[1:]):
            if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and va > vb:
                raise SpecError(f"stages.{name}.params.{a}: {va!r} is after {b} {vb!r}; fake quantization starts, "
                                f"then BatchNorm freezes, then the observers stop: use {a} <= {b}")


@OPS.register(check=_check_spec)
def quantize(
    ctx: OpContext,
    *,
    pretrained: Artifact | None = None,
    model: ModelName = "mobilenet_v2",
    width: Width = 0.25,
    backend: Backend = "x86",
    quant_delay: Fraction = 0.5,
    freeze_bn_at: Fraction = 0.625,
    freeze_observers_at: Annotated[float, Field(gt=0, le=1)] = 0.75,
    schedule: Schedule = Schedule(),
    seed: int = 0,
    latency_samples: Annotated[int, Field(ge=1, le=65536)] = 256,
    latency_batch: Annotated[int, Field(ge=1, le=4096)] = 1,
    latency_rounds: Annotated[int, Field(ge=1, le=100)] = 5,
) -> Record:
    """Train ``model`` with fake quantization, convert it to int8 and measure it (STKD Table 8).

    The float model is traced and prepared by ``torch.ao``'s FX flow (``prepare_qat_fx`` with
    the backend's default QAT qconfig: per-channel int8 weights, uint8 activations,
    Conv+BN+ReLU fused), trained on ``schedule`` like ``train`` (cross-entropy), its observers
    and BatchNorm statistics frozen after ``freeze_at`` of the epochs, then converted
    (``convert_fx``) to a model whose convolutions and linear layers run int8 kernels on the CPU.

    Parameters
    ----------
    pretrained : Artifact, optional
        A float checkpoint to fine-tune with QAT (``needs: {pretrained: <stage>}``); its
        architecture is used (``model``/``width`` may not be set). Without it the model
        trains from scratch with QAT, as STKD's baseline does.
    model, width : str, float
        The architecture trained from scratch.
    backend : {"x86", "fbgemm", "qnnpack"}
        The int8 kernels (x86/fbgemm for x86 servers, qnnpack for ARM).
    quant_delay, freeze_bn_at, freeze_observers_at : float
        Fractions of the epochs after which fake quantization starts (before it, the float
        network trains while the observers calibrate), BatchNorm switches to its running
        statistics, and the observers stop (scales and zero points fixed); 0 is from the
        start, 1 never. Each must be at most the next. For fine-tuning a ``pretrained``
        model, ``quant_delay: 0`` is usual.
    schedule : Schedule
        As for ``train`` (flat parameters in a spec; a fine-tuning run is shorter).
    seed : int
        Seeds the initialisation, batch order and augmentation.
    latency_samples, latency_batch, latency_rounds : int
        Test samples timed (cycled when the split is smaller), the batch size, and the rounds;
        each round runs the fp32 and the int8 model over the same samples in turn.

    Returns
    -------
    Record
        ``accuracy`` and the Table-5 metrics of the **int8** model on the test split,
        ``val_accuracy`` (int8), ``fake_quant_accuracy`` (the QAT model before conversion),
        ``pretrained_accuracy`` (the float checkpoint, with ``pretrained``); per ``arithmetic`` (int8, fp32):
        ``model_bytes``, ``latency_s`` and ``inference_energy_kwh`` per sample, on the CPU;
        ``size_ratio`` and ``speedup``; curves, params, MACs and FLOPs as ``train``
        (of the float architecture). Artifact: the int8 model (:func:`load_int8`).

    Notes
    -----
    There is no "fp32 accuracy of the QAT weights": with fake quantization switched off the
    network loses the clamping it was trained with (a MobileNetV2 here fell from 83 % to
    chance); the float baselines are the spec's own ``train``/``distill`` stages.
    The fp32 model timed is the same architecture with Conv+BN fused (``fuse_fx``), as a
    float model is deployed; with ``pretrained`` it is that checkpoint, otherwise the
    freshly initialised weights (dense float kernels cost the same whatever the weights).
    Both are timed in the task's own threads (``latency_threads``).
    """
    import torch
    import xarray as xr

    from compressflow.metrics.classification import classification_metrics
    from compressflow.nn.models import build_model
    from compressflow.nn.quantization import QATPhases, convert_int8, fuse_float, prepare_qat, saved_bytes, time_models
    from compressflow.nn.training import accuracy, predict

    splits = ctx.splits()
    extra: dict[str, Any] = {}
    if pretrained is not None:
        net = load_checkpoint(pretrained, ctx.device)
        model, kwargs = pretrained.meta["model"], dict(pretrained.meta["kwargs"])
        extra["pretrained_accuracy"] = accuracy(net, splits.test, device=ctx.device)
    else:
        kwargs = {"num_classes": splits.num_classes, "in_channels": splits.in_channels, "width": width}
        torch.manual_seed(seed)
        net = build_model(model, **kwargs).to(ctx.device)
    float_ref = fuse_float(net)
    try:
        prepared = prepare_qat(net, splits.sample_shape, backend)
    except ValueError as exc:
        raise InputError(f"stages.{ctx.stage}: model {model!r}: {exc}") from None
    at = {k: round(v * schedule.epochs) for k, v in
          {"quant_delay": quant_delay, "freeze_bn": freeze_bn_at, "freeze_observers": freeze_observers_at}.items()}
    phases = QATPhases(prepared, **at)
    hist = ctx.fit(prepared, schedule, seed=seed, splits=splits, stateful=(phases,),
                   on_epoch=lambda epoch, _: phases.on_epoch(epoch))
    int8 = convert_int8(prepared, backend)

    extra["fake_quant_accuracy"] = accuracy(prepared, splits.test, device=ctx.device)
    pred = predict(int8, splits.test).argmax(1)
    table5 = classification_metrics(splits.test.y.numpy(), pred.numpy(), splits.num_classes)

    inputs = splits.test.x[torch.arange(latency_samples) % len(splits.test)]
    timing = time_models({"int8": int8, "fp32": float_ref}, inputs, batch_size=latency_batch,
                         rounds=latency_rounds, backend=backend,
                         energy=ctx.meter.energy_so_far if ctx.meter is not None else None)
    sizes = {"int8": saved_bytes(int8), "fp32": saved_bytes(float_ref)}
    timed = latency_samples * (latency_rounds + 1)  # warm-up included (at most 8 batches)
    evaluated = len(splits.val) + 2 * len(splits.test) + 2 * timed + (len(splits.test) if pretrained else 0)
    costs = model_costs(build_model(model, **kwargs), splits, hist, extra_eval=evaluated)  # the float architecture

    arithmetic = ["int8", "fp32"]
    metrics = xr.Dataset(
        {
            **table5.data_vars,
            "val_accuracy": accuracy(int8, splits.val),
            "best_val_accuracy": max(hist.val_accuracy),
            **extra,
            "model_bytes": ("arithmetic", [sizes[p] for p in arithmetic]),
            "latency_s": ("arithmetic", [timing.latency_s[p] for p in arithmetic]),
            "inference_energy_kwh": ("arithmetic", [timing.energy_kwh[p] for p in arithmetic]),
            "size_ratio": sizes["int8"] / sizes["fp32"],
            "speedup": timing.latency_s["fp32"] / timing.latency_s["int8"],
            **curves(hist),
            **costs,
        },
        coords={"arithmetic": arithmetic, "epoch": list(range(1, len(hist.val_accuracy) + 1)), **table5.coords},
        attrs={"backend": backend, "latency_device": "cpu", "latency_threads": timing.threads,
               "latency_batch": latency_batch, "latency_rounds": latency_rounds, "model": model,
               "phase_epochs": ", ".join(f"{k}={v}" for k, v in at.items())},
    )
    for name, unit in UNITS.items():
        if name in metrics:
            metrics[name].attrs["units"] = unit
    artifact = _save_int8(int8, ctx, model=model, kwargs=kwargs, backend=backend)
    ctx.progress(int8_accuracy=float(metrics.accuracy), size_ratio=float(metrics.size_ratio),
                 speedup=float(metrics.speedup))
    return Record(with_units(metrics), artifact)


def _save_int8(int8: torch.nn.Module, ctx: OpContext, *, model: str, kwargs: dict[str, Any], backend: str) -> Artifact:
    import torch

    meta = {"model": model, "kwargs": dict(kwargs), "backend": backend, "quantization": "qat-fx"}
    buffer = io.BytesIO()
    torch.save({**meta, "state_dict": int8.state_dict()}, buffer)
    path = ctx.artifact_path(".int8.pt")
    atomic_write_bytes(path, buffer.getvalue())
    return Artifact("int8-model", str(path.resolve()), hashlib.sha256(buffer.getvalue()).hexdigest(), meta)


def load_int8(artifact: Artifact) -> torch.nn.Module:
    """Rebuild the int8 model a ``quantize`` task saved (CPU; weights-only read, hash checked).

    Raises
    ------
    InputError
        The file is missing, modified, or not an int8 model of this kind.
    """
    with warnings.catch_warnings():
        # the int8 tensors' storages, and the fresh observers the saved state overwrites
        warnings.filterwarnings("ignore", message=".*(TypedStorage is deprecated|must run observer).*")
        return _rebuild_int8(artifact, load_weights(artifact))


def _rebuild_int8(artifact: Artifact, blob: dict[str, Any]) -> torch.nn.Module:
    from compressflow.nn.models import build_model
    from compressflow.nn.quantization import convert_int8, prepare_qat

    try:
        kwargs = dict(blob["kwargs"])
        shape = (kwargs.get("in_channels", 3), 8, 8)
        prepared = prepare_qat(build_model(blob["model"], **kwargs), shape, blob["backend"])
        int8 = convert_int8(prepared, blob["backend"])
        int8.load_state_dict(blob["state_dict"])
    except Exception as exc:  # unknown model, other backend, weights of other names or shapes
        raise InputError(f"{artifact.kind} {artifact.path!r} is not a compressflow int8 model "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                         "re-run the quantize stage that produced it") from None
    return int8.eval()
