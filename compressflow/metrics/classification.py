"""Classification metrics of STKD Table 5: accuracy, macro precision / recall / specificity /
F1, Cohen's kappa, prevalence and the confusion matrix."""

from __future__ import annotations

import numpy as np
import xarray as xr
from sklearn.metrics import cohen_kappa_score, confusion_matrix

__all__ = ["classification_metrics"]


def classification_metrics(y_true, y_pred, num_classes: int) -> xr.Dataset:
    """Metrics of predictions against labels.

    Parameters
    ----------
    y_true, y_pred : array-like of int
        True and predicted class indices.
    num_classes : int
        Number of classes (classes absent from both still get a row/column).

    Returns
    -------
    xarray.Dataset
        Scalars ``accuracy``, ``precision``, ``recall``, ``specificity``, ``f1``, ``kappa``,
        ``prevalence`` (macro averages over classes; a class with no predictions counts
        precision 0) and per-class arrays over ``class`` plus ``confusion``
        (``true_class`` × ``pred_class``, counts).

    Examples
    --------
    >>> m = classification_metrics([0, 1, 1], [0, 1, 0], num_classes=2)
    >>> round(float(m.accuracy), 3), int(m.confusion[1, 0])
    (0.667, 1)
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    labels = np.arange(num_classes)
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    n = cm.sum()
    tp = np.diag(cm).astype(float)
    fn = cm.sum(axis=1) - tp
    fp = cm.sum(axis=0) - tp
    tn = n - tp - fn - fp
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        specificity = np.where(tn + fp > 0, tn / (tn + fp), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    prevalence = (tp + fn) / n
    per_class = {"precision": precision, "recall": recall, "specificity": specificity, "f1": f1, "prevalence": prevalence}
    ds = xr.Dataset(
        {
            "accuracy": float(tp.sum() / n),
            "kappa": float(cohen_kappa_score(y_true, y_pred, labels=labels)),
            **{name: float(values.mean()) for name, values in per_class.items()},
            **{f"class_{name}": ("class", values) for name, values in per_class.items()},
            "confusion": (("true_class", "pred_class"), cm.astype(np.int64)),
        },
        coords={"class": labels, "true_class": labels, "pred_class": labels},
    )
    for name in ("accuracy", "kappa", *per_class):
        ds[name].attrs["units"] = "1"
    ds["confusion"].attrs["units"] = "samples"
    return ds
