"""Knowledge-distillation losses (ALGORITHMS §1), registered in :data:`LOSSES`.

Every loss has the signature ``loss(student_logits, teacher_logits, labels, tau, *, alpha,
tau_squared)`` so a temperature policy can hand it each batch's τ (a float or a 0-d tensor).
Every KD loss trains on ``α · [τ²] · L_kd + (1 − α) · CE`` (:func:`with_labels`); ``tau_squared``
defaults to true for ``hkd`` (Hinton) and false for ``cmc`` and ``dml`` (the paper prints none).
``dml`` with ``tau_squared=True`` is ``hkd``; ``cmc`` with it no longer depends on τ; any loss
with ``alpha=1`` drops the label term (what ``dml`` and ``cmc`` were before ``distill`` version 2).
Registering them imports no torch (each imports ``torch.nn.functional`` when called)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from compressflow.registries import LOSSES

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["ce", "cmc", "dml", "hkd", "kl_teacher_student", "with_labels"]


def kl_teacher_student(student_logits: Tensor, teacher_logits: Tensor, tau: float | Tensor) -> Tensor:
    """``KL(o_t ‖ o_s)`` of the τ-softened outputs, averaged per sample (``batchmean``)."""
    import torch.nn.functional as F

    log_s = F.log_softmax(student_logits / tau, dim=1)
    log_t = F.log_softmax(teacher_logits / tau, dim=1)
    return F.kl_div(log_s, log_t, reduction="batchmean", log_target=True)


def with_labels(kd: Tensor, student_logits: Tensor, labels: Tensor, tau: float | Tensor, alpha: float,
                tau_squared: bool) -> Tensor:
    """``α · [τ²] · L_kd + (1 − α) · CE(y, softmax(a_s))``: the training loss every KD loss
    shares (STKD: "for all experiments, we use an α value of 0.95"); ``tau_squared`` multiplies
    the KD term by the batch's τ² (Hinton's gradient-scale correction)."""
    import torch.nn.functional as F

    if tau_squared:
        kd = tau**2 * kd
    return alpha * kd + (1 - alpha) * F.cross_entropy(student_logits, labels)


@LOSSES.register
def hkd(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, tau: float | Tensor, *, alpha: float = 0.95,
        tau_squared: bool = True) -> Tensor:
    """Hinton KD: ``α · τ² · KL(o_t ‖ o_s) + (1 − α) · CE(y, softmax(a_s))``."""
    return with_labels(kl_teacher_student(student_logits, teacher_logits, tau), student_logits, labels, tau, alpha,
                       tau_squared)


@LOSSES.register
def cmc(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, tau: float | Tensor, *, alpha: float = 0.95,
        tau_squared: bool = False) -> Tensor:
    """Ba & Caruana, temperature-altered: ``α · mean((a_s/τ − a_t/τ)²) + (1 − α) · CE``.

    With ``tau_squared`` the KD term is ``mean((a_s − a_t)²)``: it no longer depends on τ."""
    kd = ((student_logits / tau - teacher_logits / tau) ** 2).mean()
    return with_labels(kd, student_logits, labels, tau, alpha, tau_squared)


@LOSSES.register
def dml(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, tau: float | Tensor, *, alpha: float = 0.95,
        tau_squared: bool = False) -> Tensor:
    """Temperature-altered deep mutual learning with a frozen teacher:
    ``α · KL(o_t ‖ o_s) + (1 − α) · CE``. With ``tau_squared`` it equals :func:`hkd`."""
    return with_labels(kl_teacher_student(student_logits, teacher_logits, tau), student_logits, labels, tau, alpha,
                       tau_squared)


@LOSSES.register
def ce(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, tau: float | Tensor, *, alpha: float = 0.95,
       tau_squared: bool = False) -> Tensor:
    """No distillation: plain cross-entropy on the labels (the student-alone baseline; τ, α and
    ``tau_squared`` unused)."""
    import torch.nn.functional as F

    return F.cross_entropy(student_logits, labels)
