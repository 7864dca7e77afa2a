"""Replacement blocks for blockwise distillation (ALGORITHMS §3), registered in
:data:`compressflow.registries.BLOCKS`: the candidates of the paper's search,
(a) ``ds2`` — two depthwise-separable (DS) layers (the winner), (b) ``ds3``, (c) ``ds2_skip``,
(d) ``ds3_skip``. A DS layer is depthwise k×k + pointwise 1×1 + BatchNorm + ReLU; the first
maps C_in → C_out with the replaced conv's kernel, stride, padding and dilation, the rest
C_out → C_out. The target of a conv is a pre-activation (a BN follows it), so by default the
last layer has no ReLU and can output negative values. A block's output shape always equals
the replaced conv's.

Also how one block is trained on its layer's activations (:func:`train_block`) and the rule
that keeps or refuses it (:func:`rejection`), shared by ``replace_layer``, ``assemble`` and
``craft``. The modules are :mod:`compressflow.nn.replacement`; registering the candidates
imports no torch."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from compressflow.errors import InputError
from compressflow.registries import BLOCKS

if TYPE_CHECKING:
    import torch
    from torch import nn

    from compressflow.data import Split

__all__ = ["ds2", "ds2_skip", "ds3", "ds3_skip", "make_block", "rejection", "train_block"]


def _candidate(name: str, depth: int, skip: bool, doc: str):
    def build(conv: nn.Conv2d, *, final_relu: bool = False) -> nn.Module:
        from compressflow.nn.replacement import ReplacementBlock

        return ReplacementBlock(conv, depth, skip=skip, final_relu=final_relu)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = doc
    return BLOCKS.register(build)


ds2 = _candidate("ds2", 2, False, "(a) Two DS layers — the candidate the paper's search selected.")
ds3 = _candidate("ds3", 3, False, "(b) Three DS layers.")
ds2_skip = _candidate("ds2_skip", 2, True, "(c) Two DS layers plus a skip connection.")
ds3_skip = _candidate("ds3_skip", 3, True, "(d) Three DS layers plus a skip connection.")


def make_block(name: str, conv: nn.Module, *, final_relu: bool = False) -> nn.Module:
    """The registered block ``name`` for ``conv`` (``BLOCKS.get`` lists valid names).

    ``conv`` is typically ``model.get_submodule(layer)``; anything but a ``Conv2d`` raises an
    :class:`~compressflow.errors.InputError` naming its type."""
    from torch import nn

    if not isinstance(conv, nn.Conv2d):
        raise InputError(f"block {name!r}: the layer it replaces is a {type(conv).__name__}, not a Conv2d")
    return BLOCKS.get(name)(conv, final_relu=final_relu)


def train_block(net: nn.Module, layer: str, block: str, x_in: torch.Tensor, y_out: torch.Tensor, val: Split, *,
                device: torch.device, epochs: int, batch_size: int, lr: float, eval_every: int, seed: int,
                on_eval: Callable[[int, float, float], None] | None = None) -> tuple[nn.Module, dict[str, float]]:
    """Train a ``block`` for ``layer`` of ``net`` on ``(x_in, y_out)`` with the local MSE
    (Adam); every ``eval_every`` epochs (and after the last) splice it into ``net``, score the
    validation split ``val``, call ``on_eval(epoch, mse, val_accuracy)`` and keep the best
    weights.

    Returns
    -------
    block, metrics
        The block (best weights, eval mode) and ``mse`` (last epoch, train),
        ``spliced_val_accuracy`` (best), ``teacher_val_accuracy`` (of ``net``), ``accuracy_drop``,
        ``params_before``/``params_after`` and ``macs_before``/``macs_after`` (the layer's, the block's).
    """
    import copy

    import torch

    from compressflow.metrics.flops import macs_per_sample, param_count
    from compressflow.nn.surgery import spliced
    from compressflow.nn.training import accuracy

    conv = net.get_submodule(layer)
    torch.manual_seed(seed)
    blk = make_block(block, conv).to(device)
    opt = torch.optim.Adam(blk.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    teacher_val = accuracy(net, val, device=device)
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
            score = accuracy(spliced(net, {layer: blk.eval()}), val, device=device)
            if score > best[0]:
                best = (score, copy.deepcopy(blk.state_dict()))
            if on_eval is not None:
                on_eval(epoch, mse, score)
    blk.load_state_dict(best[1])
    shape = tuple(x_in.shape[1:])
    return blk.eval(), {
        "mse": mse, "spliced_val_accuracy": best[0], "teacher_val_accuracy": teacher_val,
        "accuracy_drop": teacher_val - best[0],
        "params_before": param_count(conv), "params_after": param_count(blk),
        "macs_before": macs_per_sample(conv, shape), "macs_after": macs_per_sample(blk, shape),
    }


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
    if not math.isfinite(drop):
        reasons.append(f"accuracy drop not measured ({drop})")
    elif not drop < max_drop:
        reasons.append(f"accuracy drop {drop:.3f} {'>' if drop > max_drop else '='} max_drop {max_drop:g}")
    return "; ".join(reasons)
