"""Quantization-aware training with PyTorch's FX graph mode (``torch.ao.quantization``):
prepare a float model with fake quantization, freeze its observers and BatchNorm statistics
late in training, convert it to a real int8 model (int8 weights and activations, the
x86/fbgemm or qnnpack kernels), and measure what the conversion bought: the saved size and
the per-sample inference latency beside the float model on the same inputs.

The int8 kernels run on the CPU only, so conversion and the int8/fp32 timing always happen
there; training may run on a GPU (fake quantization is ordinary float arithmetic)."""

from __future__ import annotations

import copy
import io
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["BACKENDS", "QATPhases", "Timing", "convert_int8", "fuse_float", "prepare_qat", "quantized_weights",
           "saved_bytes", "time_models"]

#: the int8 CPU backends a model can be quantized for (``torch.backends.quantized.engine``)
BACKENDS = ("x86", "fbgemm", "qnnpack")


@contextmanager
def _backend(backend: str) -> Iterator[None]:
    if backend not in torch.backends.quantized.supported_engines:
        raise ValueError(f"backend: {backend!r} is not supported by this torch build; "
                         f"it has {', '.join(torch.backends.quantized.supported_engines)}")
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = backend
    try:
        yield
    finally:
        torch.backends.quantized.engine = before


@contextmanager
def _quiet() -> Iterator[None]:
    # torch 2.14 announces the removal of torch.ao's quantized tensors (and of observers'
    # reduce_range) "in a future release" on every conversion and save; the FX flow still
    # is what builds a CPU int8 model here (the README says so), so the warnings are not repeated per task
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        for text in ("TypedStorage is deprecated", "reduce_range will be deprecated", "quantized tensor creation"):
            warnings.filterwarnings("ignore", message=f".*{text}.*")
        yield


def prepare_qat(model: nn.Module, sample_shape: tuple[int, ...], backend: str = "x86") -> torch.fx.GraphModule:
    """``model`` traced and prepared for QAT (``prepare_qat_fx`` with the backend's default
    QAT qconfig mapping: per-channel symmetric int8 weights, per-tensor affine uint8
    activations, Conv+BN(+ReLU) fused into QAT modules that fold BN during training).

    Raises
    ------
    ValueError
        The backend is not in this torch build, or the model cannot be traced by FX (the
        message says which operation stopped the tracer).
    """
    from torch.ao.quantization import get_default_qat_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    device = next(model.parameters()).device
    example = (torch.zeros(1, *sample_shape, device=device),)
    with _backend(backend), _quiet():
        try:
            return prepare_qat_fx(model.train(), get_default_qat_qconfig_mapping(backend), example)
        except (torch.fx.proxy.TraceError, TypeError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"the model cannot be traced for FX quantization ({type(exc).__name__}: {first})") from None


def convert_int8(prepared: torch.fx.GraphModule, backend: str = "x86") -> torch.fx.GraphModule:
    """The int8 model of a QAT-prepared one (a CPU copy; ``prepared`` is left as it is)."""
    from torch.ao.quantization.quantize_fx import convert_fx

    with _backend(backend), _quiet():
        return convert_fx(copy.deepcopy(prepared).cpu().eval())


def fuse_float(model: nn.Module) -> nn.Module:
    """A CPU copy of float ``model`` with Conv+BN(+ReLU) fused (``fuse_fx``): how a float
    model is deployed, so the latency comparison with int8 is not one of BN folding."""
    from torch.ao.quantization.quantize_fx import fuse_fx

    with _quiet():
        return fuse_fx(copy.deepcopy(model).cpu().eval())


def quantized_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The quantized weight of every module of ``model`` that has one (an int8 model's
    convolutions and linear layers keep theirs packed, behind ``weight()``), by module name."""
    out = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if callable(weight) and not isinstance(weight, torch.Tensor):
            weight = weight()
        if isinstance(weight, torch.Tensor) and weight.is_quantized:
            out[name] = weight
    return out


def saved_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``: the model's size on disk."""
    buffer = io.BytesIO()
    with _quiet():
        torch.save(model.state_dict(), buffer)
    return len(buffer.getvalue())


_PHASES = ("quant_delay", "freeze_bn", "freeze_observers")


@dataclass
class QATPhases:
    """When fake quantization starts, BatchNorm freezes and the observers stop, in epochs of
    a QAT run (each applies after that epoch; 0: from the start).

    Fake quantization off for the first ``quant_delay`` epochs lets the float network find
    its scale while the observers calibrate (from scratch, a narrow MobileNetV2 with fake
    quantization from step one diverged here: its activations outgrew the observed ranges).
    Freezing BatchNorm (running statistics, as the converted model uses) and then the
    observers for the last epochs is torch's QAT recipe: the network trains against the
    quantization it will be converted with.

    A :class:`~compressflow.nn.training.Stateful`: a resumed run re-applies the phases it had
    reached (BN's ``freeze_bn`` flag is an attribute, not in the model's state dict).
    """

    model: nn.Module
    quant_delay: int = 0
    freeze_bn: int = 0
    freeze_observers: int = 0
    reached: set[str] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        from torch.ao.quantization import disable_fake_quant

        if self.quant_delay > 0:
            self.model.apply(disable_fake_quant)
        self.on_epoch(0)

    def on_epoch(self, epoch: int) -> None:
        """Apply the phases due after ``epoch`` (0: before training)."""
        for phase in _PHASES:
            if phase not in self.reached and epoch >= getattr(self, phase):
                self._apply(phase)

    def _apply(self, phase: str) -> None:
        import torch.ao.nn.intrinsic.qat as nniqat
        from torch.ao.quantization import disable_observer, enable_fake_quant

        step = {"quant_delay": enable_fake_quant, "freeze_bn": nniqat.freeze_bn_stats,
                "freeze_observers": disable_observer}[phase]
        self.model.apply(step)
        self.reached.add(phase)

    def state_dict(self) -> dict[str, Any]:
        return {"reached": sorted(self.reached)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for phase in _PHASES:
            if phase in state.get("reached", ()) and phase not in self.reached:
                self._apply(phase)


@dataclass
class Timing:
    """Per-sample inference cost of each model, measured interleaved on the same inputs."""

    latency_s: dict[str, float]  # median over rounds of (round time / samples)
    energy_kwh: dict[str, float]  # measured energy / samples (nan without a meter)
    samples: int
    rounds: int
    batch_size: int
    threads: int


@torch.no_grad()
def time_models(models: Mapping[str, nn.Module], inputs: torch.Tensor, *, batch_size: int = 1, rounds: int = 5,
                energy: Callable[[], float] | None = None, backend: str = "x86") -> Timing:
    """Time ``models`` (CPU, eval mode) on ``inputs`` in ``batch_size`` chunks: one warm-up
    pass each, then ``rounds`` rounds in which every model runs over all inputs in turn, so
    a change of machine load affects them alike. ``energy()`` (the task meter's kWh so far)
    is read around every pass and the differences summed per model.

    Each model is timed as a fresh deep copy (its int8 weights packed anew): the x86 int8
    kernels keep what they prepared for the first batch shape they ran, and a later shape
    runs slower (measured on a width-0.25 MobileNetV2 at 16x16: batch 1 after one batch-512
    pass 4.3 vs 2.3 ms per sample; batch 16 after batch 1 0.36 vs 0.23 ms), so a model
    already evaluated at another batch size would be timed at that handicap. The models
    passed in are not run."""
    chunks = list(torch.split(inputs.cpu(), batch_size))
    elapsed: dict[str, list[float]] = {name: [] for name in models}
    spent = {name: 0.0 for name in models}
    with _backend(backend):
        models = {name: copy.deepcopy(net) for name, net in models.items()}
        for net in models.values():
            for x in chunks[: max(1, min(len(chunks), 8))]:
                net(x)
        for _ in range(rounds):
            for name, net in models.items():
                e0 = energy() if energy is not None else float("nan")
                t0 = time.perf_counter()
                for x in chunks:
                    net(x)
                elapsed[name].append(time.perf_counter() - t0)
                if energy is not None:
                    spent[name] += energy() - e0
    n = len(inputs)
    return Timing(
        latency_s={name: statistics.median(t) / n for name, t in elapsed.items()},
        energy_kwh={name: (spent[name] / (n * rounds) if energy is not None else float("nan")) for name in models},
        samples=n, rounds=rounds, batch_size=batch_size, threads=torch.get_num_threads(),
    )
