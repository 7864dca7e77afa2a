"""``train``: supervised cross-entropy training of a registered model (the teacher)."""

from __future__ import annotations

from typing import Annotated

import torch
import xarray as xr
from pydantic import Field

from compressflow.nn.models import build_model
from compressflow.nn.training import accuracy, fit
from compressflow.records import Record
from compressflow.registries import STAGES
from compressflow.stages._common import curves, model_costs, with_units
from compressflow.stages._context import StageContext
from compressflow.stages._signature import ModelName
from compressflow.store import save_checkpoint

__all__ = ["train"]

PositiveInt = Annotated[int, Field(ge=1)]
Fraction = Annotated[float, Field(gt=0, lt=1)]


@STAGES.register
def train(
    ctx: StageContext,
    *,
    model: ModelName = "resnet18",
    width: Annotated[float, Field(gt=0, le=4)] = 0.25,
    epochs: PositiveInt = 10,
    batch_size: PositiveInt = 64,
    lr: Annotated[float, Field(gt=0, le=10)] = 0.1,
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9,
    weight_decay: Annotated[float, Field(ge=0)] = 5e-4,
    warmup_epochs: Annotated[float, Field(ge=0)] = 1.0,
    milestones: tuple[Fraction, ...] = (0.3, 0.6, 0.8),
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.2,
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
    splits = ctx.splits()
    kwargs = {"num_classes": splits.num_classes, "in_channels": splits.in_channels, "width": width}
    torch.manual_seed(seed)
    net = build_model(model, **kwargs).to(ctx.device)

    def report(epoch: int, hist) -> None:
        ctx.progress(epoch=epoch, of=epochs, loss=hist.train_loss[-1], val_accuracy=hist.val_accuracy[-1])

    hist = fit(
        net, splits, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, momentum=momentum,
        weight_decay=weight_decay, warmup_epochs=warmup_epochs, milestones=milestones, gamma=gamma,
        augment=augment, device=ctx.device, on_epoch=report,
    )
    artifact = save_checkpoint(net, ctx.artifact_path(".pt"), model_name=model, model_kwargs=kwargs)
    metrics = xr.Dataset(
        {
            "accuracy": accuracy(net, splits.test, device=ctx.device),
            "val_accuracy": hist.val_accuracy[-1],
            "best_val_accuracy": max(hist.val_accuracy),
            **curves(hist),
            **model_costs(net, splits, hist, extra_eval=len(splits.test)),
        },
        coords={"epoch": list(range(1, epochs + 1))},
    )
    return Record(with_units(metrics), artifact)
