"""In-memory train/val/test splits and what every dataset loader shares to make them.

A loader validates its options (:func:`_options`), picks stratified indices
(:func:`_split_indices`) and hands raw arrays to :func:`_build`, which resizes, converts
channels and normalises them with the train split's statistics.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from compressflow.data.options import Options
from compressflow.errors import DataError

__all__ = ["Split", "Splits", "biased"]

_CHUNK = 4096  # images converted at a time, so a large split never exists twice as float32


@dataclass(frozen=True, eq=False)  # eq=False: tensors have no single truth value to compare by
class Split:
    """One in-memory split: ``x`` (N, C, H, W) float32, normalised; ``y`` (N,) int64. Read-only."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.ndim != 4 or self.y.ndim != 1 or len(self.x) != len(self.y):
            raise DataError(f"Split needs x of shape (N, C, H, W) and y of shape (N,), "
                            f"got x {tuple(self.x.shape)} and y {tuple(self.y.shape)}")

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True, eq=False)
class Splits:
    """Train/val/test splits of one dataset, normalised with the train split's statistics.

    ``augment`` lists the augmentations meant for training (a subset of :data:`AUGMENT_OPS`);
    ``mean``/``std`` are the per-channel statistics removed (pixels scaled to [0, 1]), so
    ``x * std + mean`` recovers the images.
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    in_channels: int
    image_size: int
    class_names: tuple[str, ...]
    augment: tuple[str, ...]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """Shape of one image, ``(C, H, W)``."""
        return (self.in_channels, self.image_size, self.image_size)


def biased(splits: Splits, classes: tuple[int, ...], keep: float, seed: int = 0) -> Splits:
    """``splits`` with only a ``keep`` fraction (at least one) of the training samples of
    ``classes``, chosen at random (seeded); val and test are untouched.

    Raises
    ------
    DataError
        A class outside ``0 … num_classes − 1``.
    """
    bad = [c for c in classes if not 0 <= c < splits.num_classes]
    if bad:
        raise DataError(f"biased_classes: class {bad[0]!r} is not in 0..{splits.num_classes - 1}")
    gen = torch.Generator().manual_seed(seed)
    y = splits.train.y
    drop = torch.zeros(len(y), dtype=torch.bool)
    for c in classes:
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        drop[idx[max(1, round(keep * len(idx))):]] = True
    kept = ~drop
    return dataclasses.replace(splits, train=Split(splits.train.x[kept], y[kept]))


def _build(name: str, parts: list[tuple[np.ndarray, np.ndarray]], scale: float, class_names: tuple[str, ...],
           opts: Options) -> Splits:
    """Resize, convert channels and normalise (train statistics) raw (N, C, H, W) train/val/test arrays."""
    xs = [_prepare(x, scale, opts.size, opts.channels) for x, _ in parts]
    var, mean = torch.var_mean(xs[0], dim=(0, 2, 3), correction=0)
    std = var.sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant channel stays constant, not NaN
    for x in xs:
        x.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
    train, val, test = (Split(x, torch.as_tensor(y, dtype=torch.int64)) for x, (_, y) in zip(xs, parts))
    return Splits(name, train, val, test, len(class_names), opts.channels, opts.size, class_names, opts.augment,
                  tuple(mean.tolist()), tuple(std.tolist()))


def _prepare(x: np.ndarray, scale: float, size: int, channels: int) -> torch.Tensor:
    n, c = x.shape[:2]
    out = torch.empty((n, channels, size, size), dtype=torch.float32)
    for start in range(0, n, _CHUNK):
        part = torch.from_numpy(np.ascontiguousarray(x[start : start + _CHUNK])).float().div_(scale)
        if channels == 1 and c == 3:  # ITU-R 601 luma, as PIL's convert("L")
            part = (part * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        if part.shape[-2:] != (size, size):
            part = F.interpolate(part, size=(size, size), mode="bilinear", align_corners=False,
                                 antialias=size < part.shape[-1])  # without it, shrinking aliases
        out[start : start + len(part)] = part  # broadcasting replicates a grey channel to 3
    return out


def _split_indices(name: str, y: np.ndarray, opts: Options) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted stratified (train, val, test) indices, sizes as fractions of ``len(y)``; no test if no test_fraction."""
    from sklearn.model_selection import train_test_split

    n, rest, test = len(y), np.arange(len(y)), np.arange(0)
    try:
        if opts.test_fraction is not None:
            rest, test = train_test_split(rest, test_size=math.ceil(opts.test_fraction * n), stratify=y,
                                          random_state=opts.seed)
        train, val = train_test_split(rest, test_size=math.ceil(opts.val_fraction * n), stratify=y[rest],
                                      random_state=opts.seed)
    except ValueError as exc:
        raise DataError(f"{name}: cannot split {n} samples of {len(np.unique(y))} classes stratified with "
                        f"val_fraction={opts.val_fraction}, test_fraction={opts.test_fraction}: every split "
                        f"needs every class ({' '.join(str(exc).split())})") from None
    return np.sort(train), np.sort(val), np.sort(test)
