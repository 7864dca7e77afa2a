"""Bias of compressed models (CEV and SDE: Blakeney et al. 2021, "Simon Says: Evaluating and
Mitigating Bias in Pruned Neural Networks with Knowledge Distillation"; PIE: Hooker et al. 2019,
"What Do Compressed Deep Neural Networks Forget?"), as two ops:

* ``bias`` — a compressed model against its original on the test split: per-class change of
  the false positive and false negative rates, CEV and SDE, and both models' predictions.
* ``pie`` — a fan-in over ``bias`` tasks: pruning-identified exemplars, the test samples whose
  modal label over a population of compressed models (by default the seeds of each setting)
  differs from the original's.
"""

from __future__ import annotations

import json
from typing import Annotated

import numpy as np
from pydantic import Field

from compressflow.ops import Artifact, OpContext, Record, Upstream, load_checkpoint
from compressflow.registries import OPS

__all__ = ["bias", "pie"]


@OPS.register
def bias(ctx: OpContext, *, model: Artifact, original: Artifact,
         floor: Annotated[float, Field(ge=0)] = 0.5) -> Record:
    """CEV and SDE of ``model`` against ``original`` (see :func:`compressflow.metrics.bias.cev_sde`;
    ``floor``: an original rate of 0 counts as this many errors).

    Returns
    -------
    Record
        ``cev``, ``sde``, ``classes_used``, ``accuracy`` and ``original_accuracy``; per class
        ``fpr_change``/``fnr_change`` (percent, dim ``class``); per test sample ``pred`` and
        ``original_pred`` (dim ``sample``) for ``pie``.
    """
    import xarray as xr

    from compressflow.metrics.bias import cev_sde
    from compressflow.nn.training import predict

    splits = ctx.splits()
    y = splits.test.y.numpy()
    pred = predict(load_checkpoint(model, ctx.device).eval(), splits.test, device=ctx.device).argmax(1).numpy()
    base = predict(load_checkpoint(original, ctx.device).eval(), splits.test, device=ctx.device).argmax(1).numpy()
    k = splits.num_classes
    res = cev_sde(_confusion(y, pred, k), _confusion(y, base, k), floor)
    metrics = xr.Dataset(
        {"cev": res["cev"], "sde": res["sde"], "classes_used": res["n_classes"],
         "accuracy": float((pred == y).mean()), "original_accuracy": float((base == y).mean()),
         "fpr_change": ("class", res["d_fpr"]), "fnr_change": ("class", res["d_fnr"]),
         "pred": ("sample", pred.astype(np.int64)), "original_pred": ("sample", base.astype(np.int64))},
        coords={"class": list(splits.class_names)},
    )
    for name in ("fpr_change", "fnr_change"):
        metrics[name].attrs["units"] = "percent"
    return Record(metrics)


@OPS.register
def pie(ctx: OpContext, *, models: Upstream, over: str = "seed") -> Record:
    """PIEs of every population: the ``bias`` tasks that differ only in ``over`` form one.

    Returns
    -------
    Record
        Dims: the other sweep axes of the ``bias`` tasks. ``pie_count``, ``pie_fraction`` (of
        the test set), ``population`` (models that finished) and per sample ``is_pie``.
    """
    import xarray as xr

    from compressflow.metrics.bias import pie_mask

    groups: dict[str, list] = {}
    for task in models:
        if task.ok:
            rest = {k: v for k, v in task.point.items() if k != over}
            groups.setdefault(json.dumps(rest, sort_keys=True, default=str), []).append(task)
    parts = []
    for label, tasks in groups.items():
        population = np.stack([t.record.metrics["pred"].values for t in tasks])
        mask = pie_mask(population, tasks[0].record.metrics["original_pred"].values)
        ds = xr.Dataset({"pie_count": int(mask.sum()), "pie_fraction": float(mask.mean()),
                         "population": len(tasks), "is_pie": ("sample", mask)})
        point = json.loads(label)
        parts.append(ds.expand_dims({k: [v] for k, v in point.items()}) if point else ds)
    return Record(xr.merge(parts, join="outer") if parts else xr.Dataset())


def _confusion(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(y * k + pred, minlength=k * k).reshape(k, k)
