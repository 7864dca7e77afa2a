"""Mini-batches of an in-memory split and vectorised per-sample augmentation (crop, flip, rotate)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from compressflow.data.options import AUGMENT_OPS, MAX_ROTATION_DEG, check_int, check_ops

if TYPE_CHECKING:
    from compressflow.data.splits import Split

__all__ = ["AUGMENT_OPS", "MAX_ROTATION_DEG", "augment_batch", "batches"]



def batches(split: Split, batch_size: int, *, shuffle: bool, augment: tuple[str, ...] = (),
            generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Iterate over ``(x, y)`` mini-batches of an in-memory split, keeping the last partial one.

    Parameters
    ----------
    split : Split
        The samples to batch.
    batch_size : int
        Samples per batch (>= 1).
    shuffle : bool
        Visit the samples in a random order drawn from ``generator``.
    augment : tuple of str
        Ops from :data:`AUGMENT_OPS` applied to each batch by :func:`augment_batch`.
    generator : torch.Generator, optional
        Source of the order and the augmentation parameters (the global RNG if omitted);
        equally seeded generators give identical batches.

    Returns
    -------
    Iterator of (Tensor, Tensor)
        Fresh tensors (never views of the split), so they may be modified.

    Raises
    ------
    DataError
        If ``batch_size`` or ``augment`` is invalid; raised by the call, not the first ``next``.
    """
    batch_size = check_int("batch_size", batch_size, 1)
    ops = check_ops(augment, "augment")
    n = len(split)
    order = torch.randperm(n, generator=generator, device=_rng_device(generator)) if shuffle else torch.arange(n)
    order = order.to(split.x.device)

    def generate() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            yield augment_batch(split.x[idx], ops, generator), split.y[idx]

    return generate()


def augment_batch(x: torch.Tensor, ops: tuple[str, ...], generator: torch.Generator | None = None) -> torch.Tensor:
    """Augment each image of a batch with its own random parameters, vectorised over the batch.

    Ops run in the order crop, flip, rotate whatever order they are given in: ``crop``
    shifts by up to ``pad = max(1, round(4 * size / 32))`` pixels with zero padding (pad 4
    at 32 px, as for CIFAR), ``flip`` mirrors horizontally with p = 0.5, ``rotate`` turns by
    an angle uniform in ±15°. Zero is the train mean after normalisation, so uncovered
    borders are mean-coloured.

    Parameters
    ----------
    x : Tensor
        (N, C, H, W) batch; not modified.
    ops : tuple of str
        Subset of :data:`AUGMENT_OPS`.
    generator : torch.Generator, optional
        Source of the per-sample parameters (the global RNG if omitted).

    Returns
    -------
    Tensor
        A batch of the same shape (``x`` itself when ``ops`` is empty).

    Raises
    ------
    DataError
        If an op is unknown.
    """
    ops = check_ops(ops, "ops")
    n = x.shape[0]
    if "crop" in ops:
        x = _random_crop(x, max(1, round(4 * x.shape[-1] / 32)), generator)
    if "flip" in ops:
        chosen = _uniform(n, generator, x.device) < 0.5
        x = torch.where(chosen.view(-1, 1, 1, 1), x.flip(-1), x)
    if "rotate" in ops:
        angle = (_uniform(n, generator, x.device) * 2 - 1) * math.radians(MAX_ROTATION_DEG)
        cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return x


def _random_crop(x: torch.Tensor, pad: int, generator: torch.Generator | None) -> torch.Tensor:
    """Shift each image by its own offset in [-pad, pad]², zero-filled (pad + random crop), by one gather."""
    n, _, h, w = x.shape
    offset = torch.randint(0, 2 * pad + 1, (2, n), generator=generator, device=_rng_device(generator)).to(x.device)
    rows = offset[0, :, None] + torch.arange(h, device=x.device)
    cols = offset[1, :, None] + torch.arange(w, device=x.device)
    padded = F.pad(x, (pad, pad, pad, pad))
    out = padded[torch.arange(n, device=x.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()  # advanced indexing moved the channel axis last


def _rng_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _uniform(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=_rng_device(generator)).to(device)
