"""Knowledge distillation for SSD detectors: SSD's own losses plus a KD loss (``hkd``, ``cmc``,
``dml`` from :data:`~compressflow.registries.LOSSES`) on the class logits of the anchors matched
to ground truth.

The student's and teacher's anchors differ (other feature maps, other aspect ratios), so they
are paired through the objects: each ground-truth object's teacher logits are the mean of the
teacher's class logits over the teacher anchors its own matcher assigns to that object (SSD's
matcher gives every object at least its best anchor), and every student anchor matched to the
object is distilled towards them. The heads are called directly, mirroring
``torchvision.models.detection.SSD.forward`` in training mode, so the matched anchors and their
logits are at hand; SSD's loss is the model's own ``compute_loss``.

The training loss is ``box regression + SSD classification + α · [τ²] · L_kd``: SSD's own
losses at full weight plus the KD term weighted by α. Unlike the classification recipe
(``α · KD + (1 − α) · CE``), SSD's classification loss is not scaled down by ``1 − α``: it is
the only term that teaches background against object (hard-negative-mined CE over all anchors),
while the KD term covers only the anchors matched to objects. At α = 0.95 the scaled-down form
left the students with little background suppression (test mAP@0.5 0.011-0.019 against 0.170
for the student alone, measured here). The ``ce`` loss is the student-alone baseline: SSD's
two losses only.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torchvision.ops import box_iou

from compressflow.registries import LOSSES

__all__ = ["SSDOutputs", "detection_kd_loss", "ssd_outputs"]


class SSDOutputs(NamedTuple):
    """What SSD's training forward computes before its loss, for one batch."""

    targets: list[dict[str, torch.Tensor]]  # resized to the model's input, as its loss sees them
    head: dict[str, torch.Tensor]  # "bbox_regression" (N, A, 4), "cls_logits" (N, A, classes + 1)
    anchors: list[torch.Tensor]  # per image (A, 4)
    matched: list[torch.Tensor]  # per image (A,): the matched object's index, or < 0 (background)


def ssd_outputs(model: Any, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> SSDOutputs:
    """Run ``model`` (a torchvision SSD) as its training forward does, up to the loss."""
    batch, resized = model.transform(images, targets)
    features = list(model.backbone(batch.tensors).values())
    head = model.head(features)
    anchors = model.anchor_generator(batch, features)
    matched = []
    for anchors_per_image, target in zip(anchors, resized):
        if target["boxes"].numel() == 0:
            matched.append(torch.full((len(anchors_per_image),), -1, dtype=torch.int64,
                                      device=anchors_per_image.device))
        else:
            matched.append(model.proposal_matcher(box_iou(target["boxes"], anchors_per_image)))
    return SSDOutputs(resized, head, anchors, matched)


def detection_kd_loss(student: Any, teacher: Any | None, images: list[torch.Tensor],
                      targets: list[dict[str, torch.Tensor]], *, loss: str = "hkd", tau: float = 4.0,
                      alpha: float = 0.95, tau_squared: bool | None = None) -> dict[str, torch.Tensor]:
    """The losses of one batch: ``bbox_regression`` and ``classification`` (SSD's), ``kd`` (0 for
    ``ce``) and ``total``, the one to minimise.

    Parameters
    ----------
    student, teacher : torchvision SSD
        The student trains (train mode); the teacher (eval mode, no gradients) only supplies
        logits; it may be None for ``loss="ce"``.
    images, targets : lists
        A batch as torchvision's detectors take it (float images in [0, 1], ``boxes`` /
        ``labels`` targets).
    loss : {"hkd", "cmc", "dml", "ce"}
        The KD loss (:data:`~compressflow.registries.LOSSES`), applied with ``alpha=1`` per
        matched anchor, the label term being SSD's classification loss.
    tau, alpha, tau_squared
        Temperature, KD weight, and whether the KD term is scaled by τ² (default: the loss's own).

    Examples
    --------
    >>> import torch
    >>> from compressflow.nn.detection import build_detector
    >>> student = build_detector("ssdlite_mobilenet_v3", num_classes=2, image_size=32, width=0.25)
    >>> teacher = build_detector("ssd_vgg16", num_classes=2, image_size=32, width=0.125).eval()
    >>> images = [torch.rand(3, 32, 32), torch.rand(3, 32, 32)]
    >>> targets = [{"boxes": torch.tensor([[2.0, 2.0, 20.0, 20.0]]), "labels": torch.tensor([1])}] * 2
    >>> out = detection_kd_loss(student, teacher, images, targets, loss="hkd", tau=4.0)
    >>> sorted(out), bool(out["kd"] > 0)
    (['bbox_regression', 'classification', 'kd', 'total'], True)
    """
    s = ssd_outputs(student, images, targets)
    ssd = student.compute_loss(s.targets, s.head, s.anchors, s.matched)
    box, cls = ssd["bbox_regression"], ssd["classification"]
    if loss == "ce":
        zero = box.new_zeros(())
        return {"bbox_regression": box, "classification": cls, "kd": zero, "total": box + cls}
    if teacher is None:
        raise ValueError(f"detection_kd_loss: loss {loss!r} needs a teacher")
    kd_fn = LOSSES.get(loss)
    with torch.no_grad():
        t = ssd_outputs(teacher, images, targets)
    student_logits, teacher_logits, labels = _paired_logits(s, t)
    if len(labels) == 0:
        kd = box.new_zeros(())
    else:
        switch = {} if tau_squared is None else {"tau_squared": tau_squared}
        kd = kd_fn(student_logits, teacher_logits, labels, tau, alpha=1.0, **switch)
    return {"bbox_regression": box, "classification": cls, "kd": kd, "total": box + cls + alpha * kd}


def _paired_logits(s: SSDOutputs, t: SSDOutputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every student anchor matched to an object: its logits, the teacher's logits for that object
    (the mean over the teacher anchors matched to it) and the object's label."""
    student_logits, teacher_logits, labels = [], [], []
    for i, target in enumerate(s.targets):
        n = len(target["labels"])
        if n == 0:
            continue
        t_matched, t_logits = t.matched[i], t.head["cls_logits"][i]
        onehot = torch.nn.functional.one_hot(t_matched.clamp(min=0), n).to(t_logits.dtype) * (t_matched >= 0)[:, None]
        per_object = (onehot.T @ t_logits) / onehot.sum(0).clamp(min=1)[:, None]
        fg = torch.where(s.matched[i] >= 0)[0]
        student_logits.append(s.head["cls_logits"][i][fg])
        teacher_logits.append(per_object[s.matched[i][fg]])
        labels.append(target["labels"][s.matched[i][fg]])
    if not labels:
        empty = s.head["cls_logits"].new_zeros((0, s.head["cls_logits"].shape[-1]))
        return empty, empty, torch.zeros(0, dtype=torch.int64)
    return torch.cat(student_logits), torch.cat(teacher_logits), torch.cat(labels)
