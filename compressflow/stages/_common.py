"""Pieces every model-producing stage records the same way."""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from compressflow.data import Splits
from compressflow.flops import macs_per_sample, param_count, train_step_flops_per_sample
from compressflow.nn.training import History

__all__ = ["UNITS", "curves", "model_costs", "with_units"]

UNITS = {
    "accuracy": "1", "val_accuracy": "1", "best_val_accuracy": "1", "train_loss": "nats",
    "train_accuracy": "1", "lr": "1", "params": "count", "macs": "MAC/sample (forward)",
    "train_flops": "FLOP (forward+backward of every training step; FLOP = 2 MAC)",
    "task_flops": "FLOP (everything the task computed: training steps + evaluation forwards)",
    "train_time_s": "s", "train_samples": "samples",
}


def with_units(ds: xr.Dataset) -> xr.Dataset:
    for name, unit in UNITS.items():
        if name in ds:
            ds[name].attrs.setdefault("units", unit)
    return ds


def curves(hist: History) -> dict[str, tuple[str, list[float]]]:
    """Per-epoch curves as ``epoch``-dimension variables."""
    return {
        "train_loss": ("epoch", hist.train_loss),
        "train_accuracy": ("epoch", hist.train_accuracy),
        "val_accuracy_curve": ("epoch", hist.val_accuracy),
        "lr": ("epoch", hist.lr),
    }


def model_costs(model: torch.nn.Module, splits: Splits, hist: History | None = None, extra_eval: int = 0) -> dict:
    """Params, forward MACs per sample, ``train_flops`` (measured forward+backward FLOPs per
    sample × samples trained; 0 without a history) and ``task_flops`` (``train_flops`` plus
    2 × MACs for every evaluated sample: the history's plus ``extra_eval``)."""
    macs = macs_per_sample(model, splits.sample_shape)
    out = {"params": param_count(model), "macs": macs, "train_flops": 0.0}
    evaluated = extra_eval
    if hist is not None:
        step = train_step_flops_per_sample(model, splits.sample_shape, splits.num_classes)
        out["train_flops"] = float(np.float64(step) * hist.train_samples)
        out["train_samples"] = hist.train_samples
        out["train_time_s"] = hist.train_time_s
        evaluated += hist.eval_samples
    out["task_flops"] = out["train_flops"] + 2.0 * macs * evaluated
    return out
