"""``craft``: craft distillation (Blakeney 2023, PhD dissertation, Texas State University), the
sequential variant of blockwise distillation, run as one task for comparison with the parallel
``replace_layer`` tasks.

Layers are replaced one at a time, each block trained on the *current* model — the one that
already holds the earlier replacements — so a block learns to map the inputs its layer really
receives after the changes upstream to what the original layer makes of them. ``top_down``
goes from the input towards the output; ``bottom_up`` the other way. A block is kept by the
rule of ``assemble`` (:func:`~compressflow.nn.blocks.rejection`): it must cost fewer
MACs than the layer, and the current model's validation accuracy with it must stay within
``max_drop`` of the teacher's; the model is then fine-tuned for ``step_epochs`` before the
next layer, and for ``schedule`` at the end.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from compressflow.ops import (BLOCK_TRAINING, FINE_TUNING, Artifact, BlockLr, BlockName, OpContext, PositiveInt, Record,
                              Schedule, check_replaceable_layers, load_checkpoint, model_record)
from compressflow.registries import OPS

__all__ = ["craft"]


@OPS.register(model_check=check_replaceable_layers)
def craft(
    ctx: OpContext,
    *,
    teacher: Artifact,
    order: Literal["top_down", "bottom_up"] = "top_down",
    layers: tuple[str, ...] | None = None,
    exclude: tuple[str, ...] = (),
    block: BlockName = "ds2",
    block_epochs: PositiveInt = BLOCK_TRAINING.epochs,
    block_batch_size: PositiveInt = BLOCK_TRAINING.batch_size,
    block_lr: BlockLr = BLOCK_TRAINING.lr,
    eval_every: PositiveInt = BLOCK_TRAINING.eval_every,
    max_drop: Annotated[float, Field(ge=0, le=1)] = 0.02,
    step_epochs: Annotated[int, Field(ge=0)] = 1,
    schedule: Schedule = FINE_TUNING,
    seed: int = 0,
) -> Record:
    """Replace ``teacher``'s layers (all replaceable ones, or ``layers`` minus ``exclude``)
    one after another in ``order``.

    Parameters
    ----------
    order : {"top_down", "bottom_up"}
        ``top_down`` starts at the layer nearest the input.
    block, block_epochs, block_batch_size, block_lr, eval_every
        Each block's training, as ``replace_layer`` (``epochs``, ``batch_size``, ``lr``; defaults
        :data:`~compressflow.ops.schedule.BLOCK_TRAINING`), on the current model's inputs and
        outputs of the layer (unaugmented train split).
    max_drop : float
        A block stays if it costs fewer MACs than the layer and the current model's validation
        accuracy with it is less than this far below the teacher's.
    step_epochs : int
        Fine-tuning epochs of the whole current model after each kept block (cross-entropy,
        at ``schedule``'s rate; 0: none).
    schedule : Schedule
        The final fine-tuning (default :data:`~compressflow.ops.schedule.FINE_TUNING`); the
        record's per-epoch curves (energy included) are this fine-tuning's.

    Returns
    -------
    Record
        As ``assemble``: the student's test metrics and costs, ``teacher_accuracy``,
        ``teacher_macs``/``teacher_params``, ``layers_macs_before``/``after`` of the kept
        blocks, ``teacher_val_accuracy``; per step (dim ``step``, in replacement order)
        ``step_layer``, ``accepted``, ``reject_reason`` (as ``assemble``'s), ``accuracy_drop``
        (teacher's validation accuracy − the current model's with the block), ``mse``,
        ``spliced_val_accuracy``, ``macs_before``/``macs_after`` (layer, block) and
        ``val_accuracy_after`` (after that step's fine-tuning); artifact: the student's
        checkpoint.
    """
    from compressflow.metrics.flops import macs_per_sample, param_count
    from compressflow.nn.blocks import rejection, train_block
    from compressflow.nn.surgery import layer_io_batched, replaceable_layers, set_module
    from compressflow.nn.training import accuracy

    splits = ctx.splits()
    teacher_net = load_checkpoint(teacher, ctx.device).eval()
    names = replaceable_layers(teacher_net, include=layers, exclude=exclude)
    if order == "bottom_up":
        names = names[::-1]
    teacher_val = accuracy(teacher_net, splits.val, device=ctx.device)
    current = load_checkpoint(teacher, ctx.device).eval()
    steps: dict[str, list] = {k: [] for k in ("accepted", "reject_reason", "accuracy_drop", "mse",
                                              "spliced_val_accuracy", "macs_before", "macs_after", "val_accuracy_after")}
    kept: dict[str, tuple[float, float]] = {}
    for i, layer in enumerate(names):
        x_in, y_out = layer_io_batched(current.eval(), layer, splits.train.x)

        def report(epoch: int, mse: float, val: float, layer: str = layer) -> None:
            ctx.progress(layer=layer, epoch=epoch, of=block_epochs, mse=mse, spliced_val_accuracy=val)

        blk, m = train_block(current, layer, block, x_in, y_out, splits.val, device=ctx.device, epochs=block_epochs,
                             batch_size=block_batch_size, lr=block_lr, eval_every=eval_every, seed=seed + i,
                             on_eval=report)
        drop = teacher_val - float(m["spliced_val_accuracy"])
        reason = rejection(drop, float(m["macs_before"]), float(m["macs_after"]), max_drop)
        ok = not reason
        if ok:
            set_module(current, layer, blk)
            kept[layer] = (float(m["macs_before"]), float(m["macs_after"]))
            if step_epochs:
                ctx.fit(current, schedule.model_copy(update={"epochs": step_epochs}), seed=seed + i,
                        label={"step": i + 1})
        steps["accepted"].append(ok)
        steps["reject_reason"].append(reason)
        steps["accuracy_drop"].append(drop)
        for k in ("mse", "spliced_val_accuracy", "macs_before", "macs_after"):
            steps[k].append(float(m[k]))
        steps["val_accuracy_after"].append(accuracy(current.eval(), splits.val, device=ctx.device))
        ctx.progress(step=i + 1, of=len(names), layer=layer, accepted=ok, val_accuracy=steps["val_accuracy_after"][-1])
    hist = ctx.fit(current, schedule, seed=seed)
    extra = {
        "step_layer": ("step", names),
        **{k: ("step", v if k == "reject_reason" else np.array(v)) for k, v in steps.items()},
        "order": order,
        "teacher_val_accuracy": teacher_val,
        "teacher_accuracy": accuracy(teacher_net, splits.test, device=ctx.device),
        "teacher_macs": macs_per_sample(teacher_net, splits.sample_shape),
        "teacher_params": param_count(teacher_net),
        "layers_macs_before": float(sum(b for b, _ in kept.values())),
        "layers_macs_after": float(sum(a for _, a in kept.values())),
    }
    surgery = {layer: block for layer in kept}
    return model_record(ctx, current, hist, teacher.meta["model"], teacher.meta["kwargs"], extra, surgery=surgery)

