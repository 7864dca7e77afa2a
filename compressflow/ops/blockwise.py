"""Parallel blockwise distillation (ALGORITHMS §3), as three ops:

* ``activations`` — run the teacher once over the train and val splits and cache, for every
  replaceable layer, the tensors entering and leaving it in one Zarr store.
* ``replace_layer`` — one independent task per layer: train a replacement block on the
  teacher's own activations with the local loss ``mean ‖f_k(x) − g_k(f_{k−1}(x))‖²`` (no
  labels), reading only that layer's arrays from the cache (or, with no cache, recomputing
  the teacher prefix batch by batch); every ``eval_every`` epochs splice the block into the
  teacher, score it on the validation split and keep the best weights.
* ``assemble`` — a fan-in over every ``replace_layer`` task: accept the blocks that cost fewer
  MACs than their layer and whose spliced accuracy drop is under ``max_drop``
  (:func:`rejection`), splice them all into the student, fine-tune briefly, and record its
  test accuracy, MACs and params against the teacher's, and why each other block was refused.
"""

from __future__ import annotations

import copy
import io
from typing import Annotated

import numpy as np
import torch
import xarray as xr
from pydantic import Field

from compressflow.data.activations import read_layer, write_activations
from compressflow.data import Splits
from compressflow.errors import InputError, one_line
from compressflow.metrics.flops import macs_per_sample, param_count
from compressflow.nn.blocks import make_block
from compressflow.nn.surgery import layer_io_batched, replaceable_layers, spliced
from compressflow.nn.training import accuracy
from compressflow.engine.records import Artifact, Record, Upstream
from compressflow.registries import OPS
from compressflow.ops.common import model_record, with_units, zarr_record
from compressflow.ops.context import OpContext
from compressflow.ops.schedule import BLOCK_TRAINING, FINE_TUNING, BlockLr, PositiveInt, Schedule
from compressflow.ops._layer_check import check_blockwise_layers
from compressflow.ops.signature import BlockName
from compressflow.ops.artifacts import artifact_digest, atomic_write_bytes, load_checkpoint, load_weights

__all__ = ["activations", "assemble", "rejection", "replace_layer"]


@OPS.register(check=check_blockwise_layers)
def activations(ctx: OpContext, *, model: Artifact, layers: tuple[str, ...] | None = None,
                exclude: tuple[str, ...] = (), batch_size: PositiveInt = 256) -> Record:
    """Cache the inputs and outputs of the replaceable layers (all, or ``layers`` minus
    ``exclude``) of ``model`` on the train and val splits (no augmentation).

    Returns
    -------
    Record
        ``n_layers``, ``store_bytes``; artifact: the Zarr store (``kind="zarr"``).
    """
    splits = ctx.splits()
    net = load_checkpoint(model, ctx.device)
    names = replaceable_layers(net, include=layers, exclude=exclude)
    path = write_activations(net, {"train": splits.train.x, "val": splits.val.x}, names, ctx.artifact_path(".zarr"),
                             batch_size=batch_size, attrs={"model_sha256": model.sha256})
    return zarr_record(path, {"layers": names}, n_layers=len(names))


@OPS.register(check=check_blockwise_layers)
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
    splits = ctx.splits()
    net = load_checkpoint(teacher, ctx.device).eval()
    replaceable_layers(net, include=[layer])  # an unknown layer: one line naming the valid ones
    x_in, y_out = _layer_data(net, layer, splits, activations)
    blk, metrics = train_block(ctx, net, layer, block, x_in, y_out, epochs=epochs, batch_size=batch_size, lr=lr,
                               eval_every=eval_every, seed=seed)
    buf = io.BytesIO()
    torch.save({"layer": layer, "block": block, "state_dict": blk.state_dict()}, buf)
    path = ctx.artifact_path(".block.pt")
    atomic_write_bytes(path, buf.getvalue())
    return Record(metrics, Artifact("block", str(path.resolve()), artifact_digest(path), {"layer": layer, "block": block}))


def train_block(ctx: OpContext, net: torch.nn.Module, layer: str, block: str, x_in: torch.Tensor,
                y_out: torch.Tensor, *, epochs: int, batch_size: int, lr: float, eval_every: int,
                seed: int) -> tuple[torch.nn.Module, xr.Dataset]:
    """Train a ``block`` for ``layer`` of ``net`` on ``(x_in, y_out)`` with the local MSE
    (Adam); every ``eval_every`` epochs splice it into ``net``, score the validation split
    and keep the best weights. Returns the block and its metrics (``mse``,
    ``spliced_val_accuracy``, ``teacher_val_accuracy`` (of ``net``), ``accuracy_drop``,
    ``params_before``/``after``, ``macs_before``/``after``)."""
    splits = ctx.splits()
    conv = net.get_submodule(layer)
    torch.manual_seed(seed)
    blk = make_block(block, conv).to(ctx.device)
    opt = torch.optim.Adam(blk.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    teacher_val = accuracy(net, splits.val, device=ctx.device)
    best = (-1.0, copy.deepcopy(blk.state_dict()))
    mse = float("nan")
    for epoch in range(1, epochs + 1):
        blk.train()
        order, total = torch.randperm(len(x_in), generator=gen), 0.0
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            loss = torch.nn.functional.mse_loss(blk(x_in[idx]), y_out[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        mse = total / len(order)
        if epoch % eval_every == 0 or epoch == epochs:
            val = accuracy(spliced(net, {layer: blk.eval()}), splits.val, device=ctx.device)
            if val > best[0]:
                best = (val, copy.deepcopy(blk.state_dict()))
            ctx.progress(layer=layer, epoch=epoch, of=epochs, mse=mse, spliced_val_accuracy=val)
    blk.load_state_dict(best[1])
    shape = tuple(x_in.shape[1:])
    metrics = xr.Dataset({
        "mse": mse, "spliced_val_accuracy": best[0], "teacher_val_accuracy": teacher_val,
        "accuracy_drop": teacher_val - best[0],
        "params_before": param_count(conv), "params_after": param_count(blk),
        "macs_before": macs_per_sample(conv, shape), "macs_after": macs_per_sample(blk, shape),
    })
    for name, unit in {"mse": "activation units²", "params_before": "count", "params_after": "count",
                       "macs_before": "MAC/sample", "macs_after": "MAC/sample"}.items():
        metrics[name].attrs["units"] = unit
    return blk.eval(), with_units(metrics)



def _layer_data(net: torch.nn.Module, layer: str, splits: Splits,
                cache: Artifact | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of ``layer`` on the (unaugmented) train split: read from the cache
    (this layer's arrays only) or recomputed through the teacher prefix."""
    if cache is not None:
        x_in, y_out = read_layer(cache.path, layer, "train")
        return torch.from_numpy(x_in[:]), torch.from_numpy(y_out[:])
    return layer_io_batched(net, layer, splits.train.x)


def rejection(drop: float, macs_before: float, macs_after: float, max_drop: float) -> str:
    """Why a replacement block is refused, or ``""`` when it is accepted: a block must cost
    fewer MACs than the layer it replaces *and* lose less than ``max_drop`` accuracy.

    Parameters
    ----------
    drop : float
        Validation accuracy lost with the block spliced in (fraction; may be negative).
    macs_before, macs_after : float
        Forward MACs per sample of the layer and of the block.
    max_drop : float
        The accuracy threshold (a drop must be strictly below it).

    Returns
    -------
    str
        ``""``, or the reasons joined by ``"; "``, e.g. ``"more MACs than the layer (1.10×)"``,
        ``"accuracy drop 0.031 > max_drop 0.02"``.

    Examples
    --------
    >>> rejection(0.01, 432, 475, 0.02)
    'more MACs than the layer (1.10×)'
    >>> rejection(0.031, 432, 100, 0.02)
    'accuracy drop 0.031 > max_drop 0.02'
    >>> rejection(-0.01, 432, 100, 0.02)
    ''
    """
    reasons = []
    if not macs_after < macs_before:
        ratio = macs_after / macs_before if macs_before else float("inf")
        more = "more MACs than" if macs_after > macs_before else "as many MACs as"
        reasons.append(f"{more} the layer ({ratio:.2f}×)")
    if not np.isfinite(drop):
        reasons.append(f"accuracy drop not measured ({drop})")
    elif not drop < max_drop:
        reasons.append(f"accuracy drop {drop:.3f} {'>' if drop > max_drop else '='} max_drop {max_drop:g}")
    return "; ".join(reasons)


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
    accuracy fell by less than ``max_drop`` (:func:`rejection`) into the teacher, fine-tune
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
    blob = load_weights(artifact, device)
    try:
        layer = blob["layer"]
        blk = make_block(blob["block"], net.get_submodule(layer))
        blk.load_state_dict(blob["state_dict"])
    except Exception as exc:  # missing keys, an unknown block or layer, misshapen weights
        raise InputError(f"block {artifact.path!r} does not rebuild a {artifact.meta.get('block')!r} block for this "
                         f"teacher ({type(exc).__name__}: {one_line(exc)}); re-run its replace_layer task") from None
    return layer, blk.to(device)
