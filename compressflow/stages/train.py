"""``train``: supervised cross-entropy training of a registered model (the teacher)."""

from __future__ import annotations

from compressflow.records import Record
from compressflow.registries import STAGES
from compressflow.stages._common import (
    Gamma, LearningRate, Milestones, Momentum, NonNegative, PositiveInt, Width, fit_model, model_record,
)
from compressflow.stages._context import StageContext
from compressflow.stages._signature import ModelName

__all__ = ["train"]


@STAGES.register
def train(
    ctx: StageContext,
    *,
    model: ModelName = "resnet18",
    width: Width = 0.25,
    epochs: PositiveInt = 10,
    batch_size: PositiveInt = 64,
    lr: LearningRate = 0.1,
    momentum: Momentum = 0.9,
    weight_decay: NonNegative = 5e-4,
    warmup_epochs: NonNegative = 1.0,
    milestones: Milestones = (0.3, 0.6, 0.8),
    gamma: Gamma = 0.2,
    augment: bool = True,
    seed: int = 0,
) -> Record:
    """Train ``model`` from scratch with cross-entropy (ALGORITHMS §1 schedule).

    Parameters
    ----------
    model, width : str, float
        Registered model name and channel-width multiplier.
    epochs, batch_size : int
        Length of training and batch size.
    lr : float
        Base learning rate for batch 128; the run uses ``lr × batch_size / 128``.
    momentum, weight_decay, warmup_epochs, milestones, gamma
        SGD settings: linear warm-up over ``warmup_epochs``; rate × ``gamma`` at each
        milestone (fraction of ``epochs``).
    augment : bool
        Apply the dataset's training augmentations.
    seed : int
        Seeds initialisation, batch order and augmentation.

    Returns
    -------
    Record
        ``accuracy`` (test), ``val_accuracy`` (final), ``best_val_accuracy``, per-epoch
        ``train_loss`` / ``train_accuracy`` / ``val_accuracy_curve`` / ``lr``, ``params``,
        ``macs``, ``train_flops``, ``task_flops``; artifact: the checkpoint.
    """
    hp = dict(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, weight_decay=weight_decay,
              warmup_epochs=warmup_epochs, milestones=milestones, gamma=gamma, augment=augment)
    net, hist, kwargs = fit_model(ctx, model=model, width=width, seed=seed, hp=hp)
    return model_record(ctx, net, hist, model, kwargs)
