"""Knowledge-distillation losses (ALGORITHMS §1), registered in :data:`LOSSES`.

Every loss has the signature ``loss(student_logits, teacher_logits, labels, tau, *, alpha)``
so a temperature policy can hand it each batch's τ (a float or a 0-d tensor)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from compressflow.registries import LOSSES

__all__ = ["ce", "cmc", "dml", "hkd", "kl_teacher_student"]

Tensor = torch.Tensor


def kl_teacher_student(student_logits: Tensor, teacher_logits: Tensor, tau: float | Tensor) -> Tensor:
    """``KL(o_t ‖ o_s)`` of the τ-softened outputs, averaged per sample (``batchmean``)."""
    log_s = F.log_softmax(student_logits / tau, dim=1)
    log_t = F.log_softmax(teacher_logits / tau, dim=1)
    return F.kl_div(log_s, log_t, reduction="batchmean", log_target=True)


@LOSSES.register
def hkd(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, tau: float | Tensor, *, alpha: float = 0.95) -> Tensor:
    """Hinton KD: ``α · τ² · KL(o_t ‖ o_s) + (1 − α) · CE(y, softmax(a_s))``."""
    kd = kl_teacher_student(student_logits, teacher_logits, tau)
    return alpha * tau**2 * kd + (1 - alpha) * F.cross_entropy(student_logits, labels)


@LOSSES.register
def cmc(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, tau: float | Tensor, *, alpha: float = 0.95) -> Tensor:
    """Ba & Caruana, temperature-altered: ``mean((a_s/τ − a_t/τ)²)`` (labels and α unused)."""
    return torch.mean((student_logits / tau - teacher_logits / tau) ** 2)


@LOSSES.register
def dml(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, tau: float | Tensor, *, alpha: float = 0.95) -> Tensor:
    """Temperature-altered deep mutual learning with a frozen teacher: ``KL(o_t ‖ o_s)``."""
    return kl_teacher_student(student_logits, teacher_logits, tau)


@LOSSES.register
def ce(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, tau: float | Tensor, *, alpha: float = 0.95) -> Tensor:
    """No distillation: plain cross-entropy on the labels (the student-alone baseline)."""
    return F.cross_entropy(student_logits, labels)
