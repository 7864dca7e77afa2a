"""Object-detection metrics: COCO mAP@0.5 and mAP@[.5:.95], overall and per class.

The arithmetic is the COCO evaluation (pycocotools, through torchmetrics'
``MeanAveragePrecision``): greedy score-ordered matching at each IoU threshold
``0.50, 0.55, …, 0.95`` (a detection matches when IoU ≥ threshold), precision interpolated at
101 recall points, averaged over the classes that have ground truth. One COCO evaluation
gives every number here: the per-class values are read from its precision table rather than by
evaluating each class again.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

__all__ = ["IOU_THRESHOLDS", "detection_metrics"]

#: COCO's IoU thresholds of mAP@[.5:.95]; a detection matches at a threshold when its IoU is >= it
#: (torchmetrics builds them with a float32 linspace, so an IoU of exactly 0.6 may fall just short of 0.6)
IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


def detection_metrics(predictions: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]],
                      num_classes: int, class_names: Sequence[str] | None = None, *,
                      backend: str = "pycocotools") -> xr.Dataset:
    """COCO box mAP of ``predictions`` against ``targets``, one pair per image.

    Parameters
    ----------
    predictions : sequence of mappings
        Per image, what a torchvision detector returns in eval mode: ``boxes`` (N, 4) as
        ``x1, y1, x2, y2`` pixels, ``scores`` (N,) and ``labels`` (N,) in ``1 … num_classes``.
    targets : sequence of mappings
        Per image, ``boxes`` (M, 4) and ``labels`` (M,) as above; optionally ``difficult`` (M,)
        bool: a difficult object (PASCAL VOC) neither counts as a miss nor makes a detection on
        it a false positive (it is passed to COCO as a crowd region, COCO's way of ignoring one).
    num_classes : int
        Number of foreground classes; label 0 is background and may not appear.
    class_names : sequence of str, optional
        Names of labels ``1 … num_classes`` (coordinate ``class_name``); default ``"1"``, ``"2"``, …
    backend : {"pycocotools", "faster_coco_eval"}
        The COCO implementation torchmetrics calls.

    Returns
    -------
    xarray.Dataset
        Scalars ``map_50`` (AP at IoU 0.5), ``map_75``, ``map_50_95`` (AP averaged over the ten
        thresholds) and ``mar_100`` (recall, at most 100 detections per image), averaged over the
        classes with ground truth; per class over dim ``class`` (labels ``1 … num_classes``)
        ``map_50_per_class`` and ``map_per_class`` (AP@[.5:.95]), NaN for a class without ground
        truth; ``num_objects`` (ground-truth boxes per class, difficult ones excluded).
        Every value is NaN where no class has ground truth.

    Raises
    ------
    ValueError
        Mismatched lengths, malformed boxes, or a label outside ``1 … num_classes``.

    Examples
    --------
    >>> import torch
    >>> gt = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([1])}]
    >>> shifted = [{"boxes": torch.tensor([[2.0, 0.0, 12.0, 10.0]]), "scores": torch.tensor([0.9]),
    ...             "labels": torch.tensor([1])}]
    >>> m = detection_metrics(shifted, gt, num_classes=1)   # IoU 80 / 120 = 2/3: matched at 0.50 … 0.65
    >>> float(m.map_50), round(float(m.map_50_95), 3)
    (1.0, 0.4)
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"detection_metrics: num_classes must be an integer >= 1, got {num_classes!r}")
    names = tuple(str(i) for i in range(1, num_classes + 1)) if class_names is None else tuple(class_names)
    if len(names) != num_classes:
        raise ValueError(f"detection_metrics: class_names has {len(names)} names for num_classes={num_classes}")
    if len(predictions) != len(targets):
        raise ValueError(f"detection_metrics: {len(predictions)} predictions for {len(targets)} targets; "
                         "give one of each per image")
    preds = [_item(p, i, num_classes, "predictions", scores=True) for i, p in enumerate(predictions)]
    gts = [_item(t, i, num_classes, "targets", scores=False) for i, t in enumerate(targets)]
    num_objects = np.zeros(num_classes, dtype=np.int64)
    for t in gts:
        counted = t["labels"][t["iscrowd"] == 0].numpy()
        num_objects += np.bincount(counted - 1, minlength=num_classes) if counted.size else 0

    per_class_50 = np.full(num_classes, np.nan)
    per_class = np.full(num_classes, np.nan)
    scalars = {"map_50": np.nan, "map_75": np.nan, "map_50_95": np.nan, "mar_100": np.nan}
    if num_objects.sum() > 0:
        result = _coco(preds, gts, backend)
        scalars = {k: _value(result["map" if k == "map_50_95" else k]) for k in scalars}
        # precision: (thresholds T, 101 recall points R, classes K, area ranges A, max detections M);
        # K follows result["classes"]; A = 0 is "all"; M = -1 is 100 detections; -1 marks "no ground truth"
        precision = result["precision"].numpy()
        for k, label in enumerate(result["classes"].reshape(-1).tolist()):
            table = precision[:, :, k, 0, -1]
            if (table > -1).any():
                per_class_50[label - 1] = table[0][table[0] > -1].mean()
                per_class[label - 1] = table[table > -1].mean()
    ds = xr.Dataset(
        {**scalars, "map_50_per_class": ("class", per_class_50), "map_per_class": ("class", per_class),
         "num_objects": ("class", num_objects)},
        coords={"class": np.arange(1, num_classes + 1), "class_name": ("class", list(names))},
    )
    for name in (*scalars, "map_50_per_class", "map_per_class"):
        ds[name].attrs["units"] = "1"
    ds["num_objects"].attrs["units"] = "boxes"
    ds["map_50"].attrs["long_name"] = "mean AP at IoU 0.5 (COCO, 101-point)"
    ds["map_50_95"].attrs["long_name"] = "mean AP over IoU 0.50:0.05:0.95 (COCO, 101-point)"
    return ds


def _coco(preds: list[dict[str, Any]], gts: list[dict[str, Any]], backend: Any) -> dict[str, Any]:
    """torchmetrics' COCO evaluation, with its precision table."""
    try:
        from torchmetrics.detection import MeanAveragePrecision
    except ImportError as exc:  # a dependency; missing only in a broken install
        raise ImportError("detection_metrics needs torchmetrics and pycocotools: "
                          "pip install 'torchmetrics>=1.4' 'pycocotools>=2.0.7'") from exc
    if backend not in ("pycocotools", "faster_coco_eval"):
        raise ValueError(f"detection_metrics: unknown backend {backend!r}; choose from pycocotools, faster_coco_eval")
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", extended_summary=True, backend=backend)
    metric.warn_on_many_detections = False  # COCO keeps each image's top 100 by design
    metric.update(preds, [{"boxes": t["boxes"], "labels": t["labels"], "iscrowd": t["iscrowd"]} for t in gts])
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pycocotools prints its summary table; torchmetrics warns on empty inputs
        return dict(metric.compute())


def _value(x: Any) -> float:
    """A COCO statistic, NaN where COCO says -1 (nothing to average)."""
    v = float(x)
    return np.nan if v < 0 else v


def _item(item: Mapping[str, Any], index: int, num_classes: int, what: str, *, scores: bool) -> dict[str, Any]:
    """One image's boxes / labels (/ scores, / crowd flags) as the tensors torchmetrics takes, validated."""
    import torch

    where = f"detection_metrics: {what}[{index}]"
    keys = ("boxes", "labels", "scores") if scores else ("boxes", "labels")
    missing = [k for k in keys if k not in item]
    if missing:
        raise ValueError(f"{where} lacks {', '.join(missing)}; give a dict with {', '.join(keys)}")
    boxes = torch.as_tensor(item["boxes"], dtype=torch.float32).detach().cpu()
    boxes = boxes.reshape(0, 4) if boxes.numel() == 0 else boxes
    labels = torch.as_tensor(item["labels"], dtype=torch.int64).detach().cpu().reshape(-1)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) != len(labels):
        raise ValueError(f"{where}: boxes of shape {tuple(boxes.shape)} for {len(labels)} labels; "
                         "expected (N, 4) boxes x1, y1, x2, y2 and N labels")
    if labels.numel() and (labels.min() < 1 or labels.max() > num_classes):
        bad = labels[(labels < 1) | (labels > num_classes)][0].item()
        raise ValueError(f"{where}: label {bad} outside 1..{num_classes} (0 is background)")
    out: dict[str, Any] = {"boxes": boxes, "labels": labels}
    if scores:
        out["scores"] = torch.as_tensor(item["scores"], dtype=torch.float32).detach().cpu().reshape(-1)
        if len(out["scores"]) != len(labels):
            raise ValueError(f"{where}: {len(out['scores'])} scores for {len(labels)} labels")
    else:
        difficult = item.get("difficult")
        crowd = (torch.zeros(len(labels), dtype=torch.int64) if difficult is None
                 else torch.as_tensor(difficult).detach().cpu().reshape(-1).to(torch.int64))
        if len(crowd) != len(labels):
            raise ValueError(f"{where}: {len(crowd)} difficult flags for {len(labels)} labels")
        out["iscrowd"] = crowd
    return out
