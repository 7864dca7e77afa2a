"""Attention transfer (Zagoruyko & Komodakis; ALGORITHMS §4) for training a pruned model with
a frozen teacher: the attention maps of the residual groups' outputs, their loss, and the
``loss_fn`` of a prune task (:class:`TeacherLoss`: cross-entropy or Hinton KD, plus AT through
forward hooks)."""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F

from compressflow.errors import InputError
from compressflow.nn.architectures import stage_outputs
from compressflow.registries import LOSSES

__all__ = ["TeacherLoss", "attention_map", "attention_transfer"]


def attention_map(f: torch.Tensor) -> torch.Tensor:
    """Zagoruyko & Komodakis's attention map of a feature map ``f`` (B×C×H×W): the mean over
    channels of ``f²``, flattened to B×HW and ℓ2-normalised per sample."""
    return F.normalize(f.pow(2).mean(1).flatten(1), dim=1)


def attention_transfer(student: list[torch.Tensor], teacher: list[torch.Tensor], beta: float = 1000.0) -> torch.Tensor:
    """``L_AT = β · Σ_groups mean((q_s − q_t)²)`` (ALGORITHMS §4), ``q`` the
    :func:`attention_map` of each group's output; the mean runs over the batch and the H×W
    positions, as in the reference code (``(at(x) − at(y)).pow(2).mean()``).

    Parameters
    ----------
    student, teacher : list of torch.Tensor
        The outputs of the residual groups (B×C×H×W, paired in order; channel counts may
        differ, spatial sizes must match).
    beta : float
        The weight (1000 in the reference).

    Raises
    ------
    InputError
        When the lists differ in length or a pair differs in spatial size.
    """
    if len(student) != len(teacher):
        raise InputError(f"attention transfer: {len(student)} student stages vs {len(teacher)} teacher stages")
    total = torch.zeros((), device=student[0].device if student else "cpu")
    for k, (s, t) in enumerate(zip(student, teacher)):
        if s.shape[0] != t.shape[0] or s.shape[2:] != t.shape[2:]:
            raise InputError(f"attention transfer: stage {k + 1} maps differ in size (student {tuple(s.shape)}, "
                             f"teacher {tuple(t.shape)}); AT needs the same batch and H×W")
        total = total + (attention_map(s) - attention_map(t)).pow(2).mean()
    return beta * total


class TeacherLoss:
    """``loss_fn(logits, x, y)`` of a prune task trained jointly with a frozen teacher: the
    base term — cross-entropy, or Hinton KD when ``kd = (temperature, alpha)`` — plus, when
    ``at_beta`` is set, :func:`attention_transfer` between the student's and the teacher's
    residual-group outputs (:func:`~compressflow.nn.models.stage_outputs`, paired in order).
    The teacher runs once per batch; the student's maps are captured by forward hooks that
    :meth:`attach` puts on it during its own forward pass."""

    def __init__(self, teacher: torch.nn.Module, *, kd: tuple[float, float] | None = None,
                 at_beta: float | None = None) -> None:
        self.teacher, self.kd, self.beta = teacher, kd, at_beta
        self.groups = stage_outputs(teacher) if at_beta is not None else []
        self.teacher_maps: list[torch.Tensor | None] = [None] * len(self.groups)
        self.student_maps: list[torch.Tensor | None] = [None] * len(self.groups)
        for k, name in enumerate(self.groups):
            teacher.get_submodule(name).register_forward_hook(self._keeper(self.teacher_maps, k))

    @staticmethod
    def _keeper(store: list, k: int):
        def hook(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            store[k] = output
        return hook

    def attach(self, student: torch.nn.Module) -> list:
        """Hook ``student``'s group outputs; returns the handles (remove them after training)."""
        if not self.groups:
            return []
        names = stage_outputs(student)
        if len(names) != len(self.groups):
            raise InputError(f"attention transfer: the student has {len(names)} stages ({', '.join(names)}), the "
                             f"teacher {len(self.groups)} ({', '.join(self.groups)})")
        return [student.get_submodule(n).register_forward_hook(self._keeper(self.student_maps, k))
                for k, n in enumerate(names)]

    def __call__(self, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t_logits = self.teacher(x)
        if self.kd is not None:
            temperature, alpha = self.kd
            loss = LOSSES.get("hkd")(logits, t_logits, y, temperature, alpha=alpha)
        else:
            loss = F.cross_entropy(logits, y)
        if self.beta is not None:
            # both forward passes above filled every map through the hooks
            maps = cast(list[torch.Tensor], self.student_maps), cast(list[torch.Tensor], self.teacher_maps)
            loss = loss + attention_transfer(*maps, self.beta)
        return loss
