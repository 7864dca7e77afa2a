"""Bias of a compressed model against its original (ALGORITHMS §5): per-class false
positive and false negative rates, their normalised change, CEV and SDE; and pruning-
identified exemplars (PIEs) over a population of compressed models.

A class whose original rate is 0 has no finite relative change; its original rate is floored
at ``floor`` errors out of that class's denominator (half an error by default), so a
near-perfect original still gives finite, comparable numbers. Set ``floor=0`` to get ``nan``
instead (those classes are then left out of the means)."""

from __future__ import annotations

import numpy as np

__all__ = ["cev_sde", "fpr_fnr", "pie_mask"]


def fpr_fnr(confusion: np.ndarray, floor: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-class ``(FPR, FNR)`` of a ``true × predicted`` confusion matrix. A rate that is 0
    is raised to ``floor / denominator`` (``floor`` in errors)."""
    c = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(c)
    positives = c.sum(axis=1)  # samples of class i
    predicted = c.sum(axis=0)
    negatives = c.sum() - positives
    fn, fp = positives - tp, predicted - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        fnr = fn / positives
        fpr = fp / negatives
        if floor > 0:
            fnr = np.where(fn == 0, floor / positives, fnr)
            fpr = np.where(fp == 0, floor / negatives, fpr)
    return fpr, fnr


def cev_sde(compressed: np.ndarray, original: np.ndarray, floor: float = 0.5) -> dict[str, np.ndarray | float]:
    """CEV and SDE of a compressed model's confusion matrix against the original's.

    ``δX_i = (X_i − X̂_i) / X̂_i × 100`` for X = (FPR, FNR) of class i (X̂: the original, floored
    as in :func:`fpr_fnr`); ``CEV = (1/n) Σ_i ‖δX_μ − δX_i‖²``;
    ``SDE = (1/n) Σ_i |δFNR_i − δFPR_i| / √2``. Classes with an undefined change (``floor=0``
    and an original rate of 0) are left out of both.

    Returns
    -------
    dict
        ``cev``, ``sde`` (floats), per-class ``d_fpr``, ``d_fnr`` (percent) and ``n_classes``
        (classes used).
    """
    fpr, fnr = fpr_fnr(compressed)
    fpr0, fnr0 = fpr_fnr(original, floor)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.stack([(fpr - fpr0) / fpr0, (fnr - fnr0) / fnr0], axis=1) * 100
    ok = np.isfinite(d).all(axis=1)
    used = d[ok]
    if not used.size:
        return {"cev": float("nan"), "sde": float("nan"), "d_fpr": d[:, 0], "d_fnr": d[:, 1], "n_classes": 0}
    mu = used.mean(axis=0)
    cev = float(np.mean(np.sum((mu - used) ** 2, axis=1)))
    sde = float(np.mean(np.abs(used[:, 1] - used[:, 0]) / np.sqrt(2)))
    return {"cev": cev, "sde": sde, "d_fpr": d[:, 0], "d_fnr": d[:, 1], "n_classes": int(ok.sum())}


def pie_mask(population: np.ndarray, original: np.ndarray) -> np.ndarray:
    """Pruning-identified exemplars (Hooker et al.): the samples whose modal label over a
    population of compressed models (``(models, samples)`` predicted labels) differs from the
    original model's label. Ties go to the smallest label."""
    pop = np.asarray(population)
    n_labels = int(max(pop.max(), np.asarray(original).max())) + 1
    counts = np.apply_along_axis(np.bincount, 0, pop, minlength=n_labels)  # (labels, samples)
    return counts.argmax(axis=0) != np.asarray(original)
