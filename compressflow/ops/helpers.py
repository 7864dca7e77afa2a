"""Pieces every model-producing op shares: building and fitting a fresh model, and recording
it (checkpoint, curves, accuracy, costs). Part of the op contract (:mod:`compressflow.ops`);
each helper imports torch and xarray when it is called, not with this module. The schedules
live in :mod:`compressflow.ops.schedule`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compressflow.ops.checkpoints import save_checkpoint
from compressflow.ops.context import OpContext
from compressflow.ops.schedule import Schedule
from compressflow.rundir.files import artifact_digest
from compressflow.rundir.records import Artifact, Record

if TYPE_CHECKING:
    import torch
    import xarray as xr

    from compressflow.data import Splits
    from compressflow.nn.training import History, LossFn, Stateful

__all__ = ["UNITS", "curves", "fit_model", "model_costs", "model_record", "with_units", "zarr_record"]


UNITS = {
    "accuracy": "1", "val_accuracy": "1", "best_val_accuracy": "1", "train_loss": "loss units",
    "train_accuracy": "1", "lr_curve": "1", "params": "count", "macs": "MAC/sample (forward)",
    "train_flops": "FLOP (forward+backward of every training step, plus any teacher forwards; FLOP = 2 MAC)",
    "task_flops": "FLOP (everything the task computed: training steps + evaluation forwards)",
    "train_time_s": "s", "train_samples": "samples", "elapsed_curve_s": "s (cumulative, end of each epoch)",
    "energy_curve_kwh": "kWh (cumulative, end of each epoch; CPU+GPU+RAM as metered)",
}


def with_units(ds: xr.Dataset) -> xr.Dataset:
    for name, unit in UNITS.items():
        if name in ds:
            ds[name].attrs.setdefault("units", unit)
    return ds


def curves(hist: History) -> dict[str, tuple[str, list[float]]]:
    """Per-epoch curves as ``epoch``-dimension variables (energy and elapsed time are
    cumulative from the task's start of training; energy is ``nan`` when not metered)."""
    n = len(hist.val_accuracy)
    return {
        "train_loss": ("epoch", hist.train_loss),
        "train_accuracy": ("epoch", hist.train_accuracy),
        "val_accuracy_curve": ("epoch", hist.val_accuracy),
        "lr_curve": ("epoch", hist.lr),
        "elapsed_curve_s": ("epoch", hist.elapsed_s if len(hist.elapsed_s) == n else [float("nan")] * n),
        "energy_curve_kwh": ("epoch", hist.energy_kwh if len(hist.energy_kwh) == n else [float("nan")] * n),
    }


def model_costs(model: torch.nn.Module, splits: Splits, hist: History | None = None, extra_eval: int = 0,
                teacher_macs: int = 0) -> dict:
    """Params, forward MACs per sample, ``train_flops`` (measured forward+backward FLOPs per
    sample × samples trained, plus ``2 × teacher_macs`` per trained sample for a distillation
    teacher's forward; 0 without a history) and ``task_flops`` (``train_flops`` plus 2 × MACs
    for every evaluated sample: the history's plus ``extra_eval``)."""
    import numpy as np

    from compressflow.metrics.flops import macs_per_sample, param_count, train_step_flops_per_sample

    macs = macs_per_sample(model, splits.sample_shape)
    out = {"params": param_count(model), "macs": macs, "train_flops": 0.0}
    evaluated = extra_eval
    if hist is not None:
        step = train_step_flops_per_sample(model, splits.sample_shape, splits.num_classes)
        out["train_flops"] = float((np.float64(step) + 2.0 * teacher_macs) * hist.train_samples)
        out["train_samples"] = hist.train_samples
        out["train_time_s"] = hist.train_time_s
        evaluated += hist.eval_samples
    out["task_flops"] = out["train_flops"] + 2.0 * macs * evaluated
    return out


def fit_model(ctx: OpContext, *, model: str, width: float, seed: int, schedule: Schedule,
              loss_fn: LossFn | None = None, stateful: Sequence[Stateful] = (), splits: Splits | None = None
              ) -> tuple[torch.nn.Module, History, dict[str, Any]]:
    """Build ``model`` (seeded) for the pipeline's data and train it on ``schedule``
    (:meth:`OpContext.fit`: progress and energy per epoch; ``loss_fn``: cross-entropy by
    default; ``stateful``: the loss's own state, checkpointed with the model; ``splits``:
    other data, e.g. a synthetic training split)."""
    import torch

    from compressflow.nn.models import build_model

    splits = ctx.splits() if splits is None else splits
    kwargs = {"num_classes": splits.num_classes, "in_channels": splits.in_channels, "width": width}
    torch.manual_seed(seed)
    net = build_model(model, **kwargs).to(ctx.device)
    hist = ctx.fit(net, schedule, seed=seed, loss_fn=loss_fn, splits=splits, stateful=stateful)
    return net, hist, kwargs


def model_record(ctx: OpContext, net: torch.nn.Module, hist: History, model: str, kwargs: dict[str, Any],
                 extra: dict[str, Any] | None = None, teacher_macs: int = 0,
                 surgery: dict[str, str] | None = None) -> Record:
    """Checkpoint ``net`` and record its test metrics (STKD Table 5: accuracy, macro precision,
    recall, specificity, F1, kappa, prevalence, confusion matrix), validation accuracy,
    curves, costs and ``extra`` variables."""
    import xarray as xr

    from compressflow.metrics.classification import classification_metrics
    from compressflow.nn.training import predict

    splits = ctx.splits()
    artifact = save_checkpoint(net, ctx.artifact_path(".pt"), model_name=model, model_kwargs=kwargs, surgery=surgery)
    pred = predict(net, splits.test, device=ctx.device).argmax(1)
    table5 = classification_metrics(splits.test.y.numpy(), pred.numpy(), splits.num_classes)
    metrics = xr.Dataset(
        {
            **table5.data_vars,
            "val_accuracy": hist.val_accuracy[-1],
            "best_val_accuracy": max(hist.val_accuracy),
            **curves(hist),
            **model_costs(net, splits, hist, extra_eval=len(splits.test), teacher_macs=teacher_macs),
            **(extra or {}),
        },
        coords={"epoch": list(range(1, len(hist.val_accuracy) + 1)), **table5.coords},
    )
    return Record(with_units(metrics), artifact)


def zarr_record(path: Path, meta: dict[str, Any], **metrics: Any) -> Record:
    """The record of a stage that wrote a Zarr store at ``path``: ``metrics`` plus its size
    on disk (``store_bytes``), and the store as a hashed ``zarr`` artifact."""
    import xarray as xr

    ds = xr.Dataset({**metrics, "store_bytes": sum(f.stat().st_size for f in path.rglob("*") if f.is_file())})
    ds["store_bytes"].attrs["units"] = "bytes"
    return Record(ds, Artifact("zarr", str(path), artifact_digest(path), meta))
