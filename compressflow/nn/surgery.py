"""Module surgery for blockwise distillation (ALGORITHMS §3): find the replaceable layers of
a model, read the activations entering and leaving one of them, and splice in a block."""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

from compressflow.errors import InputError

__all__ = ["layer_io", "layer_io_batched", "replaceable_layers", "set_module", "spliced"]


def replaceable_layers(model: nn.Module, include: Iterable[str] | None = None,
                       exclude: Iterable[str] | None = None) -> list[str]:
    """Names of the convolutions a blockwise study replaces, in forward (definition) order:
    every ``nn.Conv2d`` with a kernel larger than 1×1 and ``groups == 1``.

    Parameters
    ----------
    model : nn.Module
    include, exclude : iterable of str, optional
        Keep only these layers / drop these layers (names as in ``model.named_modules()``).

    Raises
    ------
    InputError
        A name in ``include``/``exclude`` that is not a replaceable layer (the message lists them).
    """
    found = [name for name, m in model.named_modules()
             if isinstance(m, nn.Conv2d) and max(m.kernel_size) > 1 and m.groups == 1]
    for field, names in (("include", include), ("exclude", exclude)):
        bad = [n for n in (names or ()) if n not in found]
        if bad:
            raise InputError(f"layers.{field}: {bad[0]!r} is not a replaceable layer; valid: {', '.join(found)}")
    chosen = [n for n in found if include is None or n in set(include)]
    return [n for n in chosen if n not in set(exclude or ())]


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule ``name`` (dotted path) of ``model`` in place."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def spliced(model: nn.Module, blocks: dict[str, nn.Module]) -> nn.Module:
    """A copy of ``model`` with each named layer replaced by its block (the original is untouched)."""
    out = copy.deepcopy(model)
    for name, block in blocks.items():
        set_module(out, name, copy.deepcopy(block))
    return out


class _Stop(Exception):
    pass


@torch.no_grad()
def layer_io(model: nn.Module, name: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The tensors entering and leaving layer ``name`` when ``model`` (in its current mode)
    runs on ``x``. Only the prefix up to that layer is computed: the forward pass is cut
    right after the layer."""
    layer = model.get_submodule(name)
    seen: dict[str, torch.Tensor] = {}

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        seen["in"], seen["out"] = inputs[0].detach(), output.detach()
        raise _Stop

    handle = layer.register_forward_hook(hook)
    try:
        model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    if "in" not in seen:
        raise InputError(f"layer {name!r} is not used in the model's forward pass")
    return seen["in"], seen["out"]


def layer_io_batched(model: nn.Module, name: str, x: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`layer_io` over ``x`` in batches of ``batch_size`` (bounded memory), concatenated."""
    parts = [layer_io(model, name, x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
