"""Pieces every model-producing stage shares: the hyper-parameter types, building and
fitting a fresh model, and recording it (checkpoint, curves, accuracy, costs)."""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import xarray as xr
from pydantic import BaseModel, ConfigDict, Field

from compressflow.data import Splits
from compressflow.energy import current_meter
from compressflow.errors import SpecWarning
from compressflow.metrics.flops import macs_per_sample, param_count, train_step_flops_per_sample
from compressflow.nn.models import build_model
from compressflow.metrics.classification import classification_metrics
from compressflow.nn.training import History, LossFn, cross_entropy, fit, predict
from compressflow.engine.records import Artifact, Record
from compressflow.ops.context import StageContext
from compressflow.ops.artifacts import artifact_digest, save_checkpoint

__all__ = ["MIN_BASE_RATE_EPOCHS", "UNITS", "PositiveInt", "Schedule", "Width", "base_rate_epochs", "check_schedule",
           "curves", "fit_model", "model_costs", "model_record", "with_units", "zarr_record"]

PositiveInt = Annotated[int, Field(ge=1)]
NonNegative = Annotated[float, Field(ge=0)]
Width = Annotated[float, Field(gt=0, le=4)]


class Schedule(BaseModel):
    """The training schedule every training-like stage shares (ALGORITHMS §1). In a spec
    its fields are plain stage parameters (``epochs: 8``).

    ``lr`` is the base rate for batch 128 (the run uses ``lr × batch_size / 128``), warmed up
    linearly over ``warmup_epochs`` and multiplied by ``gamma`` at each milestone (fractions
    of ``epochs``: 30/60/80 of 100 in the paper); ``augment`` applies the dataset's training
    augmentations. ``optimizer`` is ``sgd`` (the paper's, with ``momentum``) or ``adamw``
    (decoupled weight decay; steps independent of the gradient's scale)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 64
    lr: Annotated[float, Field(gt=0, le=10)] = 0.1
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    weight_decay: NonNegative = 5e-4
    warmup_epochs: NonNegative = 1.0
    milestones: tuple[Annotated[float, Field(gt=0, lt=1)], ...] = (0.3, 0.6, 0.8)
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.2
    optimizer: Literal["sgd", "adamw"] = "sgd"
    augment: bool = True


MIN_BASE_RATE_EPOCHS = 2.0
"""A model trained from scratch with fewer epochs than this at the full base rate gets a
:class:`~compressflow.errors.SpecWarning` at spec time (2 epochs with the default 1-epoch
warm-up and milestones at 30/60/80 % leave none, and train every student to chance)."""


def base_rate_epochs(epochs: float, warmup_epochs: float, milestones: tuple[float, ...], gamma: float) -> float:
    """Epochs trained at the full base rate: from the end of the linear warm-up to the first
    milestone (to the end when there is none or ``gamma`` is 1), never below 0.

    Examples
    --------
    >>> base_rate_epochs(2, 1.0, (0.3, 0.6, 0.8), 0.2)  # the first decay at epoch 0.6, mid-warm-up
    0.0
    >>> base_rate_epochs(100, 1.0, (0.3, 0.6, 0.8), 0.2)
    29.0
    """
    end = epochs if not milestones or gamma == 1 else min(milestones) * epochs
    return max(0.0, min(end, epochs) - warmup_epochs)


def check_schedule(spec: Any, name: str) -> None:
    """Spec-time check of stage ``name``'s training schedule: warn (``SpecWarning``, naming the
    stage and the epochs) when a sweep point leaves fewer than :data:`MIN_BASE_RATE_EPOCHS`
    epochs at the base rate. For ops that train a model from scratch (``train``, ``distill``,
    ``prune`` with ``reinit``/``random``); a fine-tuning schedule is short on purpose."""
    from compressflow.ops.signature import stage_signature  # (it imports the op registry)

    st = spec.stages[name]
    sig = stage_signature(st.op)
    fields = ("epochs", "warmup_epochs", "milestones", "gamma")
    axes = [f for f in fields if f in st.sweep]
    worst = None
    for values in itertools.product(*(st.sweep[a] for a in axes)):
        point = {**st.params, **{a: st.sweep[a][0] for a in st.sweep}, **dict(zip(axes, values))}
        p = sig.validate(point, where=f"stages.{name}.params")
        left = base_rate_epochs(p["epochs"], p["warmup_epochs"], tuple(p["milestones"]), p["gamma"])
        if left < MIN_BASE_RATE_EPOCHS and (worst is None or left < worst[0]):
            worst = (left, p)
    if worst is not None:
        left, p = worst
        first = f"first milestone {min(p['milestones']):g} (epoch {min(p['milestones']) * p['epochs']:g})" \
            if p["milestones"] and p["gamma"] != 1 else "no milestone"
        warnings.warn(
            f"stages.{name}: epochs {p['epochs']} with warmup_epochs {p['warmup_epochs']:g} and {first} leave "
            f"{left:.1f} epochs at the base learning rate (fewer than {MIN_BASE_RATE_EPOCHS:g}); the model may train "
            f"to chance; raise epochs, shorten warmup_epochs or move the milestones later",
            SpecWarning, stacklevel=2)


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


def fit_model(ctx: StageContext, *, model: str, width: float, seed: int, schedule: Schedule,
              loss_fn: LossFn = cross_entropy) -> tuple[torch.nn.Module, History, dict[str, Any]]:
    """Build ``model`` (seeded) for the pipeline's data and train it on ``schedule``,
    reporting progress per epoch."""
    splits = ctx.splits()
    kwargs = {"num_classes": splits.num_classes, "in_channels": splits.in_channels, "width": width}
    torch.manual_seed(seed)
    net = build_model(model, **kwargs).to(ctx.device)

    def report(epoch: int, hist: History) -> None:
        ctx.progress(epoch=epoch, of=schedule.epochs, loss=hist.train_loss[-1], val_accuracy=hist.val_accuracy[-1])

    hist = fit(net, splits, seed=seed, loss_fn=loss_fn, device=ctx.device, on_epoch=report,
               energy=current_meter().energy_so_far, **schedule.model_dump())
    return net, hist, kwargs


def model_record(ctx: StageContext, net: torch.nn.Module, hist: History, model: str, kwargs: dict[str, Any],
                 extra: dict[str, Any] | None = None, teacher_macs: int = 0,
                 surgery: dict[str, str] | None = None) -> Record:
    """Checkpoint ``net`` and record its test metrics (STKD Table 5: accuracy, macro precision,
    recall, specificity, F1, kappa, prevalence, confusion matrix), validation accuracy,
    curves, costs and ``extra`` variables."""
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
    ds = xr.Dataset({**metrics, "store_bytes": sum(f.stat().st_size for f in path.rglob("*") if f.is_file())})
    ds["store_bytes"].attrs["units"] = "bytes"
    return Record(ds, Artifact("zarr", str(path), artifact_digest(path), meta))
