"""Parallel blockwise distillation (Blakeney et al. 2021, "Parallel Blockwise Knowledge Distillation
for Deep Neural Network Compression", IEEE TPDS), as three ops:

* ``activations`` — run the teacher once over the train and val splits and cache, for every
  replaceable layer, the tensors entering and leaving it in one Zarr store.
* ``replace_layer`` — one independent task per layer: train a replacement block on the
  teacher's own activations with the local loss ``mean ‖f_k(x) − g_k(f_{k−1}(x))‖²`` (no
  labels), reading only that layer's arrays from the cache (or, with no cache, recomputing
  the teacher prefix batch by batch); every ``eval_every`` epochs splice the block into the
  teacher, score it on the validation split and keep the best weights.
* ``assemble`` — a fan-in over every ``replace_layer`` task: accept the blocks that cost fewer
  MACs than their layer and whose spliced accuracy drop is under ``max_drop``
  (:func:`compressflow.nn.blocks.rejection`), splice them all into the student, fine-tune briefly, and record its
  test accuracy, MACs and params against the teacher's, and why each other block was refused.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Annotated

import numpy as np
from pydantic import Field

from compressflow.errors import InputError, one_line
from compressflow.ops import (BLOCK_TRAINING, FINE_TUNING, Artifact, BlockLr, BlockName, OpContext, PositiveInt, Record,
                              Schedule, Upstream, check_replaceable_layers, load_checkpoint, load_weights, model_record,
                              with_units, zarr_record)
from compressflow.registries import OPS
from compressflow.rundir.files import artifact_digest, atomic_write_bytes

if TYPE_CHECKING:
    import torch

    from compressflow.data import Splits

__all__ = ["activations", "assemble", "replace_layer"]

BLOCK_UNITS = {"mse": "activation units²", "params_before": "count", "params_after": "count",
               "macs_before": "MAC/sample", "macs_after": "MAC/sample"}


@OPS.register(model_check=check_replaceable_layers)
def activations(ctx: OpContext, *, model: Artifact, layers: tuple[str, ...] | None = None,
                exclude: tuple[str, ...] = (), batch_size: PositiveInt = 256) -> Record:
    """Cache the inputs and outputs of the replaceable layers (all, or ``layers`` minus
    ``exclude``) of ``model`` on the train and val splits (no augmentation).

    Returns
    -------
    Record
        ``n_layers``, ``store_bytes``; artifact: the Zarr store (``kind="zarr"``).
    """
    from compressflow.data.activations import write_activations
    from compressflow.nn.surgery import replaceable_layers

    splits = ctx.splits()
    net = load_checkpoint(model, ctx.device)
    names = replaceable_layers(net, include=layers, exclude=exclude)
    path = write_activations(net, {"train": splits.train.x, "val": splits.val.x}, names, ctx.artifact_path(".zarr"),
                             batch_size=batch_size, attrs={"model_sha256": model.sha256})
    return zarr_record(path, {"layers": names}, n_layers=len(names))


@OPS.register(model_check=check_replaceable_layers)
def replace_layer(
    ctx: OpContext,
    *,
    teacher: Artifact,
    activations: Artifact | None = None,
    layer: str,
    block: BlockName = "ds2",
    epochs: PositiveInt = BLOCK_TRAINING.epochs,
    batch_size: PositiveInt = BLOCK_TRAINING.batch_size,
    lr: BlockLr = BLOCK_TRAINING.lr,
    eval_every: PositiveInt = BLOCK_TRAINING.eval_every,
    seed: int = 0,
) -> Record:
    """Train a ``block`` to stand in for ``layer`` of ``teacher`` (Adam on the local MSE).

    Parameters
    ----------
    activations : Artifact, optional
        The ``activations`` store; without it the teacher prefix is recomputed per batch.
    layer : str
        The conv to replace (sweep it: one task per layer).
    block : str
        A registered replacement block (``ds2`` = the paper's choice).
    epochs, batch_size, lr, eval_every
        The block's training (:class:`~compressflow.ops.schedule.BlockTraining`; defaults
        :data:`~compressflow.ops.schedule.BLOCK_TRAINING`).

    Returns
    -------
    Record
        ``mse`` (final epoch, train), ``spliced_val_accuracy`` (best), ``teacher_val_accuracy``,
        ``accuracy_drop``, ``params_before``/``params_after`` and ``macs_before``/``macs_after``
        of the layer; artifact: the block's weights (``kind="block"``).
    """
    import torch
    import xarray as xr

    from compressflow.nn.blocks import train_block
    from compressflow.nn.surgery import replaceable_layers

    splits = ctx.splits()
    net = load_checkpoint(teacher, ctx.device).eval()
    replaceable_layers(net, include=[layer])  # an unknown layer: one line naming the valid ones
    x_in, y_out = _layer_data(net, layer, splits, activations)
    blk, values = train_block(net, layer, block, x_in, y_out, splits.val, device=ctx.device, epochs=epochs,
                              batch_size=batch_size, lr=lr, eval_every=eval_every, seed=seed,
                              on_eval=lambda epoch, mse, val: ctx.progress(layer=layer, epoch=epoch, of=epochs, mse=mse,
                                                                        spliced_val_accuracy=val))
    metrics = with_units(xr.Dataset(values))
    for name, unit in BLOCK_UNITS.items():
        metrics[name].attrs["units"] = unit
    buf = io.BytesIO()
    torch.save({"layer": layer, "block": block, "state_dict": blk.state_dict()}, buf)
    path = ctx.artifact_path(".block.pt")
    atomic_write_bytes(path, buf.getvalue())
    return Record(metrics, Artifact("block", str(path.resolve()), artifact_digest(path), {"layer": layer, "block": block}))


def _layer_data(net: torch.nn.Module, layer: str, splits: Splits,
                cache: Artifact | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of ``layer`` on the (unaugmented) train split: read from the cache
    (this layer's arrays only) or recomputed through the teacher prefix."""
    import torch

    from compressflow.data.activations import read_layer
    from compressflow.nn.surgery import layer_io_batched

    if cache is not None:
        x_in, y_out = read_layer(cache.path, layer, "train")
        return torch.from_numpy(x_in[:]), torch.from_numpy(y_out[:])
    return layer_io_batched(net, layer, splits.train.x)


@OPS.register
def assemble(
    ctx: OpContext,
    *,
    teacher: Artifact,
    blocks: Upstream,
    max_drop: Annotated[float, Field(ge=0, le=1)] = 0.02,
    schedule: Schedule = FINE_TUNING,
    seed: int = 0,
) -> Record:
    """Splice every block that is cheaper than its layer and whose spliced validation
    accuracy fell by less than ``max_drop`` (:func:`compressflow.nn.blocks.rejection`) into the teacher, fine-tune
    the student on ``schedule`` (default :data:`~compressflow.ops.schedule.FINE_TUNING`) and
    record it, with its per-epoch curves (energy included) as ``train``'s.

    Returns
    -------
    Record
        As ``train`` for the student, plus per layer (dim ``layer``) ``accepted`` (bool) and
        ``reject_reason`` (``""`` for an accepted block, else e.g. ``"more MACs than the layer
        (1.10×)"``, ``"accuracy drop 0.031 > max_drop 0.02"`` or ``"task failed: …"``),
        ``teacher_accuracy``, ``teacher_macs``/``teacher_params`` and the replaced layers'
        ``layers_macs_before``/``layers_macs_after``; artifact: the student's checkpoint.
    """
    from compressflow.metrics.flops import macs_per_sample, param_count
    from compressflow.nn.blocks import rejection
    from compressflow.nn.surgery import spliced
    from compressflow.nn.training import accuracy

    splits = ctx.splits()
    net = load_checkpoint(teacher, ctx.device).eval()
    chosen, reasons = {}, {}
    for task in blocks:
        # an ok block task has its record, and the record its block's artifact
        rec = task.record if task.ok else None
        art = rec.artifact if rec is not None else None
        layer = task.point.get("layer") or (art.meta["layer"] if art is not None else None)
        if rec is None:
            first = (task.error or "").strip().splitlines()
            reason = f"task {task.status.replace('_', ' ')}" + (f": {first[0][:200]}" if first else "")
        else:
            m = rec.metrics
            reason = rejection(float(m["accuracy_drop"]), float(m["macs_before"]), float(m["macs_after"]), max_drop)
        if layer is not None:
            reasons[layer] = reason
        if not reason:
            assert art is not None  # only an ok task's reason can be empty
            name, blk = _load_block(art, net, ctx.device)
            chosen[name] = (art.meta["block"], blk, m)
    student = spliced(net, {layer: b for layer, (_, b, _) in chosen.items()})
    hist = ctx.fit(student, schedule, seed=seed)
    extra = {
        "accepted": ("layer", np.array([not r for r in reasons.values()], dtype=bool)),
        "reject_reason": ("layer", list(reasons.values())),
        "layer": ("layer", list(reasons)),
        "teacher_accuracy": accuracy(net, splits.test, device=ctx.device),
        "teacher_macs": macs_per_sample(net, splits.sample_shape),
        "teacher_params": param_count(net),
        "layers_macs_before": float(sum(float(m["macs_before"]) for _, _, m in chosen.values())),
        "layers_macs_after": float(sum(float(m["macs_after"]) for _, _, m in chosen.values())),
    }
    surgery = {layer: name for layer, (name, _, _) in chosen.items()}
    return model_record(ctx, student, hist, teacher.meta["model"], teacher.meta["kwargs"], extra, surgery=surgery)


def _load_block(artifact: Artifact, net: torch.nn.Module, device: torch.device) -> tuple[str, torch.nn.Module]:
    """The replacement block of a ``replace_layer`` artifact, rebuilt for ``net``'s layer:
    hash-checked and weights-only like every checkpoint (a bad file is one InputError line)."""
    from compressflow.nn.blocks import make_block

    blob = load_weights(artifact, device)
    try:
        layer = blob["layer"]
        blk = make_block(blob["block"], net.get_submodule(layer))
        blk.load_state_dict(blob["state_dict"])
    except Exception as exc:  # missing keys, an unknown block or layer, misshapen weights
        raise InputError(f"block {artifact.path!r} does not rebuild a {artifact.meta.get('block')!r} block for this "
                         f"teacher ({type(exc).__name__}: {one_line(exc)}); re-run its replace_layer task") from None
    return layer, blk.to(device)
