"""Pruning masks (ALGORITHMS §4), applied through ``torch.nn.utils.prune`` so they stay in
force while the model retrains (the forward pass multiplies each weight by its mask).

Layer by layer, never global; every conv and linear weight is prunable except the final
classifier's, which stays dense. A layer pruned to sparsity ``s`` has exactly
``round(s · n)`` zero weights (unstructured) or ``round(s · filters)`` zero filters
(structured, L1 norm)."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from compressflow.errors import InputError

__all__ = ["agp_sparsity", "apply_masks", "filter_masks", "layer_sparsity", "magnitude_masks", "make_permanent",
           "prunable_layers", "random_masks"]


def prunable_layers(model: nn.Module) -> list[str]:
    """Names of every ``Conv2d``/``Linear`` except the last ``Linear`` (the classifier)."""
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if linears:
        names.remove(linears[-1])
    if not names:
        raise InputError(f"prune: {type(model).__name__} has no prunable conv or linear layer besides its classifier")
    return names


def _weight(model: nn.Module, name: str) -> torch.Tensor:
    """The weight in force: ``weight_orig × weight_mask`` while a mask is applied."""
    m = model.get_submodule(name)
    # Module.__getattr__ is typed ``Tensor | Module``: these attributes are tensors
    if hasattr(m, "weight_orig"):
        return (cast(torch.Tensor, m.weight_orig) * cast(torch.Tensor, m.weight_mask)).detach()
    return cast(torch.Tensor, m.weight).detach()


def _smallest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """A mask (1 keep, 0 prune) of ``scores``' shape zeroing the ``k`` smallest (ties by index)."""
    flat = scores.flatten()
    mask = torch.ones_like(flat)
    if k > 0:
        order = torch.sort(flat, stable=True).indices
        mask[order[:k]] = 0
    return mask.view_as(scores)


def magnitude_masks(model: nn.Module, sparsity: float, layers: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Per layer, zero the ``round(s · n)`` weights of smallest magnitude."""
    _check(sparsity)
    out = {}
    for name in layers or prunable_layers(model):
        w = _weight(model, name)
        out[name] = _smallest(w.abs(), round(sparsity * w.numel()))
    return out


def random_masks(model: nn.Module, sparsity: float, generator: torch.Generator,
                 layers: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Per layer, zero ``round(s · n)`` weights chosen uniformly at random (seeded)."""
    _check(sparsity)
    out = {}
    for name in layers or prunable_layers(model):
        w = _weight(model, name)
        scores = torch.rand(w.shape, generator=generator)
        out[name] = _smallest(scores, round(sparsity * w.numel()))
    return out


def filter_masks(model: nn.Module, sparsity: float, layers: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Per conv layer, zero the ``round(s · filters)`` output filters of smallest L1 norm
    (structured pruning; linear layers are left out)."""
    _check(sparsity)
    out = {}
    for name in layers or prunable_layers(model):
        w = _weight(model, name)
        if w.ndim != 4:
            continue
        norms = w.abs().sum(dim=(1, 2, 3))
        keep = _smallest(norms, round(sparsity * w.shape[0]))
        out[name] = keep.view(-1, 1, 1, 1).expand_as(w).clone()
    return out


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Put ``masks`` in force (combined with any mask already there)."""
    for name, mask in masks.items():
        torch_prune.custom_from_mask(model.get_submodule(name), "weight", mask.to(_weight(model, name).device))


def make_permanent(model: nn.Module) -> None:
    """Bake the masks into the weights and drop the pruning hooks (before saving)."""
    for _, module in model.named_modules():
        if torch_prune.is_pruned(module) and hasattr(module, "weight_orig"):
            torch_prune.remove(module, "weight")


def layer_sparsity(model: nn.Module, layers: list[str] | None = None) -> dict[str, float]:
    """Fraction of exactly-zero weights per layer."""
    return {n: float((_weight(model, n) == 0).float().mean()) for n in layers or prunable_layers(model)}


def agp_sparsity(target: float, steps: int, initial: float = 0.1) -> list[float]:
    """Zhu & Gupta's gradual schedule: ``s_k = s_f + (s_i − s_f)(1 − k/(n−1))³`` for
    ``k = 0 … n−1`` (``s_i = min(initial, s_f)``); one step goes straight to the target."""
    _check(target)
    if steps <= 1:
        return [target]
    start = min(initial, target)
    return [target + (start - target) * (1 - k / (steps - 1)) ** 3 for k in range(steps)]


def _check(sparsity: float) -> None:
    if not 0 < sparsity < 1:
        raise InputError(f"sparsity: must be in (0, 1), got {sparsity!r}")
