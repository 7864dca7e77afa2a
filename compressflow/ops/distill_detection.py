"""``train_detection`` and ``distill_detection``: STKD Table 4's detection row — an SSD-VGG16
teacher trained on a detection dataset, and an SSDlite-MobileNetV3 student trained from it with
SSD's losses plus a KD loss on the matched anchors' class logits (:mod:`compressflow.nn.detection_kd`),
at a fixed τ or STKD's stochastic τ, both scored by COCO mAP on the test split.

The pipeline's ``data:`` block names the detection dataset (``shapes`` or ``voc``) and its
options, as for every other study (:func:`compressflow.data.load_detection_splits`); the
model's input side is the data's ``image_size``.
"""

from __future__ import annotations

import io
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from compressflow.errors import InputError
from compressflow.nn.temperature import temperature_policy, temperature_vars
from compressflow.ops import (Artifact, DetectorName, Fraction, LossName, OpContext, Record, Schedule, Temperature, Width,
                              load_weights)
from compressflow.registries import OPS
from compressflow.rundir.files import atomic_write_bytes

if TYPE_CHECKING:
    import torch
    import xarray as xr

    from compressflow.data.detection import DetectionSplit

__all__ = ["distill_detection", "train_detection"]

#: detection trains with Adam at a modest rate (SGD at the classification default diverges from scratch)
DETECTION_SCHEDULE = Schedule(epochs=10, batch_size=16, lr=0.004, optimizer="adam", weight_decay=0.0,
                              warmup_epochs=0.5, milestones=(0.7,), gamma=0.1)
#: the data options these ops took before the spec's data block chose detection datasets
_MOVED = {old: (f"the detection data is set in the spec's data block like every study's; move it there as "
                f"data: {{{new}: ...}} (e.g. data: {{dataset: shapes, image_size: 64, num_images: 300, "
                f"max_objects: 3, seed: 0}}) and drop it from the stage")
          for old, new in (("dataset", "dataset"), ("root", "root"), ("image_size", "image_size"),
                           ("num_images", "num_images"), ("max_objects", "max_objects"), ("data_seed", "seed"))}


@OPS.register(data="detection", moved=_MOVED)
def train_detection(ctx: OpContext, *, model: DetectorName = "ssd_vgg16", width: Width = 0.25,
                    schedule: Schedule = DETECTION_SCHEDULE, seed: int = 0) -> Record:
    """Train a detector from scratch with SSD's losses (the teacher of ``distill_detection``).

    Parameters
    ----------
    model, width : str, float
        ``ssd_vgg16`` (default) or ``ssdlite_mobilenet_v3`` and its channel multiplier.
    schedule : Schedule
        Adam at 0.004 (for batch 128, scaled by ``batch_size / 128``), batch 16, 10 epochs;
        ``augment`` flips images horizontally.
    seed : int
        Seeds initialisation, batch order and flips (not the data: sweep it without changing them).

    Returns
    -------
    Record
        ``map_50``, ``map_50_95``, ``map_75``, ``mar_100`` (test), ``val_map_50``, per class
        ``map_50_per_class`` / ``map_per_class`` (dim ``class``), ``train_loss`` (dim ``epoch``),
        ``params``, ``train_time_s``; artifact: the checkpoint.
    """
    return _run(ctx, None, "ce", 1.0, 0.0, None, model, width, schedule, seed)


@OPS.register(data="detection", moved=_MOVED)
def distill_detection(ctx: OpContext, *, teacher: Artifact, model: DetectorName = "ssdlite_mobilenet_v3",
                      width: Width = 0.5, loss: LossName = "hkd", temperature: Temperature = 4.0,
                      alpha: Fraction = 0.95, tau_squared: bool | None = None,
                      schedule: Schedule = DETECTION_SCHEDULE, seed: int = 0) -> Record:
    """Distil a ``train_detection`` teacher into a fresh detector (STKD Table 4, detection).

    The loss is ``box regression + SSD classification + α · [τ²] · L_kd`` (SSD's losses at full
    weight, see :mod:`compressflow.nn.detection_kd`), ``L_kd``
    the KD loss on the class logits of the student's anchors matched to ground truth against
    the teacher's logits for the same objects (:func:`compressflow.nn.detection_kd.detection_kd_loss`).

    Parameters
    ----------
    teacher : Artifact
        A ``train_detection`` checkpoint (``needs: {teacher: <stage>}``), frozen in eval mode.
    model, width : str, float
        The student (default ``ssdlite_mobilenet_v3`` at width 0.5).
    loss : {"hkd", "cmc", "dml", "ce"}
        ``ce``: no KD (the student alone, SSD's losses only).
    temperature : float or {"stochastic": [low, high]}
        A fixed τ or STKD's τ drawn per batch from the integers low..high.
    alpha, tau_squared
        The KD weight (0.95) and whether the KD term is scaled by τ² (default: the loss's own).
    schedule
        As for ``train_detection``.
    seed : int
        Seeds initialisation, batch order, flips and the τ draws.

    Returns
    -------
    Record
        As ``train_detection``, plus ``tau_mean``, ``stochastic`` and, for stochastic τ,
        ``tau_draws`` (dim ``step``) and ``tau_count`` (dim ``tau``).
    """
    teacher_net = _load_detector(teacher, ctx.device)
    return _run(ctx, teacher_net, loss, alpha, temperature, tau_squared, model, width, schedule, seed)


def _run(ctx: OpContext, teacher: Any, loss: str, alpha: float, temperature: Any, tau_squared: bool | None,
         model: str, width: float, schedule: Schedule, seed: int) -> Record:
    import torch
    import xarray as xr

    from compressflow.data.detection import detection_batches
    from compressflow.nn.detection import build_detector
    from compressflow.nn.detection_kd import detection_kd_loss
    from compressflow.nn.training import optimizer_with_schedule

    splits = ctx.detection_splits()
    image_size = ctx.data.get("image_size") or _default_size(splits)
    if len(splits.train) < 2:
        raise InputError(f"{splits.name}: the training split has {len(splits.train)} image; at least 2 are needed "
                         "(batch norm needs two samples per batch)")
    kwargs = {"name": model, "num_classes": splits.num_classes, "image_size": image_size, "width": width}
    torch.manual_seed(seed)
    net = build_detector(model, num_classes=splits.num_classes, image_size=image_size, width=width).to(ctx.device)
    batch = min(schedule.batch_size, len(splits.train))
    steps = len(splits.train) // batch  # the last partial batch is dropped: a batch of one breaks batch norm
    opt, sched = optimizer_with_schedule(
        net, lr=schedule.lr, batch_size=batch, epochs=schedule.epochs, steps_per_epoch=steps,
        momentum=schedule.momentum, weight_decay=schedule.weight_decay, warmup_epochs=schedule.warmup_epochs,
        milestones=schedule.milestones, gamma=schedule.gamma, optimizer=schedule.optimizer)
    policy = temperature_policy(4.0 if teacher is None else temperature, seed)
    gen = torch.Generator().manual_seed(seed)
    curve = []
    start = time.perf_counter()
    for epoch in range(1, schedule.epochs + 1):
        net.train()
        total, seen = 0.0, 0
        for images, targets in detection_batches(splits.train, batch, shuffle=True, flip=schedule.augment,
                                                 generator=gen):
            if len(images) < batch:
                continue
            images = [x.to(ctx.device) for x in images]
            targets = [_trainable(t, ctx.device) for t in targets]
            terms = detection_kd_loss(net, teacher, images, targets, loss=loss, tau=policy() if teacher is not None
                                      else 1.0, alpha=alpha, tau_squared=tau_squared)
            opt.zero_grad(set_to_none=True)
            terms["total"].backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)  # early SSD steps spike without it
            opt.step()
            sched.step()
            total, seen = total + float(terms["total"].detach()), seen + 1
        curve.append(total / max(seen, 1))
        ctx.progress(epoch=epoch, of=schedule.epochs, loss=curve[-1])
    train_time = time.perf_counter() - start
    test = evaluate_detector(net, splits.test, splits.class_names, ctx.device)
    val = evaluate_detector(net, splits.val, splits.class_names, ctx.device) if len(splits.val) else None
    artifact = _save_detector(net, ctx.artifact_path(".pt"), kwargs)
    extra = temperature_vars(policy) if teacher is not None else {}
    metrics = xr.Dataset(
        {**test.data_vars, "val_map_50": float(val.map_50) if val is not None else np.nan,
         "train_loss": ("epoch", curve), "params": sum(p.numel() for p in net.parameters()),
         "train_time_s": train_time, **extra},
        coords={**test.coords, "epoch": list(range(1, schedule.epochs + 1))})
    for name, unit in (("val_map_50", "1"), ("train_loss", "loss units"), ("params", "count"),
                       ("train_time_s", "s")):
        metrics[name].attrs["units"] = unit
    return Record(metrics, artifact)


def evaluate_detector(net: Any, split: DetectionSplit, class_names: tuple[str, ...], device: torch.device,
                      batch_size: int = 32) -> xr.Dataset:
    """COCO mAP of ``net`` on ``split`` (:func:`compressflow.metrics.detection.detection_metrics`)."""
    import torch

    from compressflow.data.detection import detection_batches
    from compressflow.metrics.detection import detection_metrics

    net.eval()
    preds, targets = [], []
    with torch.no_grad():
        for images, batch_targets in detection_batches(split, batch_size):
            out = net([x.to(device) for x in images])
            preds += [{k: v.cpu() for k, v in o.items()} for o in out]
            targets += batch_targets
    return detection_metrics(preds, targets, num_classes=len(class_names), class_names=class_names)


def _default_size(splits: Any) -> int:
    """The model's input side when the data block sets no ``image_size``: the images' own
    (square, generated) side, else the SSD default."""
    return int(splits.image_size) if splits.image_size else 300


def _trainable(target: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A target without its difficult objects (they are not trained on, as in VOC practice)."""
    keep = ~target["difficult"]
    return {"boxes": target["boxes"][keep].to(device), "labels": target["labels"][keep].to(device)}


def _save_detector(net: Any, path: Any, kwargs: dict[str, Any]) -> Artifact:
    import hashlib

    import torch

    buf = io.BytesIO()
    torch.save({"detector": dict(kwargs), "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}},
               buf)
    atomic_write_bytes(path, buf.getvalue())
    return Artifact("checkpoint", str(path.resolve()), hashlib.sha256(buf.getvalue()).hexdigest(),
                    {"detector": dict(kwargs)})


def _load_detector(artifact: Artifact, device: torch.device) -> Any:
    """A ``train_detection`` checkpoint rebuilt, frozen, in eval mode."""
    from compressflow.nn.detection import build_detector

    blob = load_weights(artifact, device)
    spec = blob.get("detector")
    if not isinstance(spec, dict) or not isinstance(blob.get("state_dict"), dict):
        raise InputError(f"distill_detection.teacher: {artifact.path!r} is not a train_detection checkpoint "
                         f"(it holds {', '.join(map(repr, blob)) or 'nothing'}); use a train_detection stage")
    net = build_detector(spec["name"], num_classes=spec["num_classes"], image_size=spec["image_size"],
                         width=spec["width"])
    net.load_state_dict(blob["state_dict"])
    net.to(device).eval().requires_grad_(False)
    return net
