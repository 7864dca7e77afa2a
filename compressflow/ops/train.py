"""``train``: supervised cross-entropy training of a registered model (the teacher)."""

from __future__ import annotations

from compressflow.ops import ModelName, OpContext, Record, Schedule, Width, check_schedule, fit_model, model_record
from compressflow.registries import OPS

__all__ = ["train"]


# the check warns when the schedule leaves ~no epochs at the base rate
@OPS.register(check=check_schedule)
def train(
    ctx: OpContext,
    *,
    model: ModelName = "resnet18",
    width: Width = 0.25,
    schedule: Schedule = Schedule(),
    seed: int = 0,
) -> Record:
    """Train ``model`` from scratch with cross-entropy (STKD's schedule: Rafat et al.
    2023, PLoS ONE 18(5) e0285668).

    Parameters
    ----------
    model, width : str, float
        Registered model name and channel-width multiplier.
    schedule : Schedule
        ``epochs`` (10), ``batch_size`` (64), ``lr`` (0.1 for batch 128), ``momentum``,
        ``weight_decay``, ``warmup_epochs``, ``milestones``, ``gamma``, ``augment`` — flat
        parameters in a spec.
    seed : int
        Seeds initialisation, batch order and augmentation.

    Returns
    -------
    Record
        ``accuracy`` (test), ``val_accuracy`` (final), ``best_val_accuracy``, per-epoch
        ``train_loss`` / ``train_accuracy`` / ``val_accuracy_curve`` / ``lr``, ``params``,
        ``macs``, ``train_flops``, ``task_flops``; artifact: the checkpoint.
    """
    net, hist, kwargs = fit_model(ctx, model=model, width=width, seed=seed, schedule=schedule)
    return model_record(ctx, net, hist, model, kwargs)

