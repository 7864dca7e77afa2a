"""``distill``: train a student from a frozen teacher with a KD loss and a temperature policy
(a fixed τ — one grid point — or STKD's stochastic τ drawn per batch), on the pipeline's
training split or, data-free, on a ``synthesize`` stage's images (``needs: {data: <stage>}``)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any


from compressflow.errors import InputError, SpecError
from compressflow.nn.temperature import temperature_policy, temperature_vars
from compressflow.ops import (Artifact, Fraction, LossName, ModelName, OpContext, Record, Schedule, Temperature, Width,
                              check_schedule, fit_model, load_checkpoint, model_record)
from compressflow.registries import LOSSES, OPS
from compressflow.rundir.records import artifact_problem

if TYPE_CHECKING:
    import torch

__all__ = ["distill"]


def check_distill(spec: Any, name: str) -> None:
    """Spec-time check of a ``distill`` stage: its schedule (:func:`check_schedule`) and that
    ``needs.data``, when given, is a ``synthesize`` stage (the one op writing image sets)."""
    check_schedule(spec, name)
    upstream = spec.stages[name].needs.get("data")
    if upstream is not None and spec.stages[upstream].op != "synthesize":
        raise SpecError(f"stages.{name}.needs.data: stage {upstream!r} is a {spec.stages[upstream].op!r} stage; "
                        f"distill trains on the images of a 'synthesize' stage (drop needs.data to train on the "
                        f"pipeline's own training split)")


# the check warns when the schedule leaves ~no epochs at the base rate; version 2: dml and cmc
# gained the (1 − α)·CE term and every loss the tau_squared switch (STKD's α = 0.95 for all).
# The optional `data` input needs no new version: a key holds only the needs a stage gives.
@OPS.register(version=2, check=check_distill)
def distill(
    ctx: OpContext,
    *,
    teacher: Artifact,
    data: Artifact | None = None,
    model: ModelName = "mobilenet_v2",
    width: Width = 0.25,
    loss: LossName = "hkd",
    temperature: Temperature = 4.0,
    alpha: Fraction = 0.95,
    tau_squared: bool | None = None,
    schedule: Schedule = Schedule(),
    seed: int = 0,
) -> Record:
    """Distil ``teacher`` into a fresh ``model`` (Hinton et al. 2015, arXiv:1503.02531; stochastic
    τ: STKD, Rafat et al. 2023, PLoS ONE 18(5) e0285668).

    Parameters
    ----------
    teacher : Artifact
        Upstream checkpoint (``needs: {teacher: <stage>}``); loaded once, kept in eval mode
        and never updated.
    data : Artifact, optional
        A ``synthesize`` stage's image set (``needs: {data: <stage>}``): the student trains on
        its images instead of the pipeline's training split (data-free KD), with the
        dataset's augmentation as usual; validation and test stay the pipeline's real val and
        test splits. Its labels are DeepInversion's sampled targets (which the teacher
        classifies as such): the ``(1 − alpha)`` CE term uses them; ``alpha: 1`` is pure KD.
    model, width : str, float
        The student.
    loss : {"hkd", "cmc", "dml", "ce"}
        KD loss from the loss registry; each trains on ``α · [τ²] · L_kd + (1 − α) · CE``.
    temperature : float or {"stochastic": [low, high]}
        A fixed τ (sweep it for a grid search) or a τ drawn per batch uniformly from the
        integers low..high, applied to teacher and student and to HKD's τ² factor.
    alpha : float
        Weight of the distillation term, ``1 − alpha`` that of the labels' CE (0.95, STKD's
        value for every loss; 1 drops the label term).
    tau_squared : bool, optional
        Multiply the KD term by the batch's τ²; default: the loss's own (``hkd`` yes, ``cmc``
        and ``dml`` no). ``dml`` with it equals ``hkd``; ``cmc`` with it ignores τ.
    schedule : Schedule
        As for ``train`` (flat parameters in a spec).
    seed : int
        Seeds the student's initialisation, batch order, augmentation and the τ draws.

    Returns
    -------
    Record
        As ``train`` (``train_flops`` includes the teacher's forward passes), plus
        ``tau_mean``, ``stochastic`` (bool), and for stochastic τ the per-step ``tau_draws``
        (dim ``step``) and their histogram ``tau_count`` (dim ``tau``), and ``synthetic``
        (bool: trained on ``data``); artifact: the student's checkpoint.

    Raises
    ------
    InputError
        ``data`` is not an image-set store, or its images or labels do not fit the pipeline's data.
    """
    import torch

    from compressflow.data.synthesized import read_image_set
    from compressflow.metrics.flops import macs_per_sample
    from compressflow.nn.training import memory_format

    splits = ctx.splits()
    train_on = splits
    if data is not None:
        problem = artifact_problem(data)
        if problem is not None:
            raise InputError(f"distill.data: {problem}; re-run the 'synthesize' stage that produced it")
        synthetic, _ = read_image_set(data.path, sample_shape=splits.sample_shape, num_classes=splits.num_classes,
                                      where="distill.data")
        train_on = dataclasses.replace(splits, train=synthetic)
    teacher_net = load_checkpoint(teacher, ctx.device).eval().to(memory_format=memory_format(ctx.device))
    teacher_net.requires_grad_(False)
    policy = temperature_policy(temperature, seed)
    kd = LOSSES.get(loss)
    switch = {} if tau_squared is None else {"tau_squared": tau_squared}

    def loss_fn(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = teacher_net(x)
        return kd(logits, teacher_logits, y, policy(), alpha=alpha, **switch)

    net, hist, kwargs = fit_model(ctx, model=model, width=width, seed=seed, schedule=schedule, loss_fn=loss_fn,
                                  stateful=(policy,), splits=train_on)
    return model_record(ctx, net, hist, model, kwargs, {**temperature_vars(policy), "synthetic": data is not None},
                        teacher_macs=macs_per_sample(teacher_net, splits.sample_shape))
