"""The training schedules ops share, defined once: :class:`Schedule` (SGD/AdamW on the whole
model; STKD's schedule, Rafat et al. 2023, PLoS ONE 18(5) e0285668) with its fine-tuning
defaults :data:`FINE_TUNING`, and :class:`BlockTraining` (Adam on one replacement block's local
loss; Blakeney et al. 2021, IEEE TPDS), plus the spec-time check that a from-scratch schedule
leaves epochs at the base rate."""

from __future__ import annotations

import itertools
import warnings
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from compressflow.errors import SpecWarning

__all__ = ["BLOCK_TRAINING", "FINE_TUNING", "MIN_BASE_RATE_EPOCHS", "BlockLr", "BlockTraining", "NonNegative",
           "PositiveInt", "Schedule", "base_rate_epochs", "check_schedule"]

PositiveInt = Annotated[int, Field(ge=1)]
NonNegative = Annotated[float, Field(ge=0)]
#: Adam's rate for a replacement block (a local MSE: small steps, at most 1)
BlockLr = Annotated[float, Field(gt=0, le=1)]


class Schedule(BaseModel):
    """The training schedule every training-like op shares (STKD's: Rafat et al. 2023, PLoS ONE
    18(5) e0285668). In a spec its fields are plain stage parameters (``epochs: 8``).

    ``lr`` is the base rate for batch 128 (the run uses ``lr × batch_size / 128``), warmed up
    linearly over ``warmup_epochs`` and multiplied by ``gamma`` at each milestone (fractions
    of ``epochs``: 30/60/80 of 100 in the paper); ``augment`` applies the dataset's training
    augmentations. ``optimizer`` is ``sgd`` (STKD's code, with ``momentum``), ``adam`` (the
    optimizer STKD's text names) or ``adamw`` (decoupled weight decay); Adam's steps do not
    depend on the gradient's scale.

    An op declares it as one parameter, ``schedule: Schedule = Schedule()``, whose default
    instance sets the op's defaults (e.g. :data:`FINE_TUNING`); the spec sets its fields flat.

    Examples
    --------
    >>> Schedule(epochs=2).lr, FINE_TUNING.epochs, FINE_TUNING.lr
    (0.1, 3, 0.01)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 64
    lr: Annotated[float, Field(gt=0, le=10)] = 0.1
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    weight_decay: NonNegative = 5e-4
    warmup_epochs: NonNegative = 1.0
    milestones: tuple[Annotated[float, Field(gt=0, lt=1)], ...] = (0.3, 0.6, 0.8)
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.2
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    augment: bool = True


#: the default schedule of ops that fine-tune an already trained model after surgery
#: (``assemble``, ``craft``): a few epochs at a tenth of the rate, no warm-up
FINE_TUNING = Schedule(epochs=3, lr=0.01, warmup_epochs=0)


class BlockTraining(BaseModel):
    """How one replacement block is trained on its layer's activations (Blakeney et al. 2021, IEEE
    TPDS): Adam
    at ``lr`` on the local MSE for ``epochs`` in batches of ``batch_size``, spliced in and
    scored on the validation split every ``eval_every`` epochs (the best is kept).

    ``replace_layer`` takes these as its ``epochs``, ``batch_size``, ``lr`` and ``eval_every``
    parameters, ``craft`` as ``block_epochs``, ``block_batch_size``, ``block_lr`` and
    ``eval_every``; both take their defaults from :data:`BLOCK_TRAINING`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 64
    lr: BlockLr = 1e-3
    eval_every: PositiveInt = 2


#: the block-training defaults of ``replace_layer`` and ``craft``
BLOCK_TRAINING = BlockTraining()


MIN_BASE_RATE_EPOCHS = 2.0
"""A model trained from scratch with fewer epochs than this at the full base rate gets a
:class:`~compressflow.errors.SpecWarning` at spec time (2 epochs with the default 1-epoch
warm-up and milestones at 30/60/80 % leave none, and train every student to chance)."""


def base_rate_epochs(epochs: float, warmup_epochs: float, milestones: tuple[float, ...], gamma: float) -> float:
    """Epochs trained at the full base rate: from the end of the linear warm-up to the first
    milestone (to the end when there is none or ``gamma`` is 1), never below 0.

    Examples
    --------
    >>> base_rate_epochs(2, 1.0, (0.3, 0.6, 0.8), 0.2)  # the first decay at epoch 0.6, mid-warm-up
    0.0
    >>> base_rate_epochs(100, 1.0, (0.3, 0.6, 0.8), 0.2)
    29.0
    """
    end = epochs if not milestones or gamma == 1 else min(milestones) * epochs
    return max(0.0, min(end, epochs) - warmup_epochs)


def check_schedule(spec: Any, name: str) -> None:
    """Spec-time check of stage ``name``'s training schedule: warn (``SpecWarning``, naming the
    stage and the epochs) when a sweep point leaves fewer than :data:`MIN_BASE_RATE_EPOCHS`
    epochs at the base rate. For ops that train a model from scratch (``train``, ``distill``,
    ``prune`` with ``reinit``/``random``); a fine-tuning schedule is short on purpose."""
    from compressflow.ops.signature import stage_signature  # (it imports the op registry)

    st = spec.stages[name]
    sig = stage_signature(st.op)
    fields = ("epochs", "warmup_epochs", "milestones", "gamma")
    axes = [f for f in fields if f in st.sweep]
    worst = None
    for values in itertools.product(*(st.sweep[a] for a in axes)):
        point = {**st.params, **{a: st.sweep[a][0] for a in st.sweep}, **dict(zip(axes, values))}
        p = sig.validate(point, where=f"stages.{name}.params")
        left = base_rate_epochs(p["epochs"], p["warmup_epochs"], tuple(p["milestones"]), p["gamma"])
        if left < MIN_BASE_RATE_EPOCHS and (worst is None or left < worst[0]):
            worst = (left, p)
    if worst is not None:
        left, p = worst
        first = f"first milestone {min(p['milestones']):g} (epoch {min(p['milestones']) * p['epochs']:g})" \
            if p["milestones"] and p["gamma"] != 1 else "no milestone"
        warnings.warn(
            f"stages.{name}: epochs {p['epochs']} with warmup_epochs {p['warmup_epochs']:g} and {first} leave "
            f"{left:.1f} epochs at the base learning rate (fewer than {MIN_BASE_RATE_EPOCHS:g}); the model may train "
            f"to chance; raise epochs, shorten warmup_epochs or move the milestones later",
            SpecWarning, stacklevel=2)
