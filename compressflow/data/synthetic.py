"""``synthetic``: seeded class-conditional images, generated from the seed (no files)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from compressflow.data.options import check_int, options
from compressflow.registries import DATASETS

if TYPE_CHECKING:
    from compressflow.data.splits import Splits

__all__ = ["synthetic"]

_SYNTHETIC_SIGNAL = 0.25  # pattern amplitude against unit noise: a linear model gets ~80 %, not 100 %


def _check(*, num_samples: int = 1000, num_classes: int = 10, image_size: int | None = None,
           channels: int | None = None, val_fraction: float = 0.15, test_fraction: float = 0.2, seed: int = 0,
           augment: tuple[str, ...] | None = None, **_: object) -> None:
    options(image_size, channels, augment, val_fraction, test_fraction, seed, 16, ())
    check_int("num_samples", num_samples, 1), check_int("num_classes", num_classes, 2)


@DATASETS.register(check=_check)
def synthetic(*, num_samples: int = 1000, num_classes: int = 10, image_size: int | None = None,
              channels: int | None = None, val_fraction: float = 0.15, test_fraction: float = 0.2,
              seed: int = 0, augment: tuple[str, ...] | None = None) -> Splits:
    """Seeded class-conditional images: a smooth random pattern per class, shifted, plus noise.

    Each sample is its class's low-frequency pattern translated by a few random pixels, plus
    unit pixel noise four times the pattern's amplitude: learnable, not trivially. Classes are
    balanced. Default size 16, 3 channels, augmentation crop only: translations preserve the
    label by construction; flips and rotations are not how the classes were made.
    """
    import torch
    import torch.nn.functional as F

    from compressflow.data.augment import _random_crop
    from compressflow.data.splits import _build, _split_indices

    opts = options(image_size, channels, augment, val_fraction, test_fraction, seed, 16, ("crop",))
    n, k = check_int("num_samples", num_samples, 1), check_int("num_classes", num_classes, 2)
    c, size = opts.channels, opts.size
    gen = torch.Generator().manual_seed(opts.seed)
    patterns = F.interpolate(torch.randn(k, c, 4, 4, generator=gen), size=(size, size), mode="bilinear",
                             align_corners=False)  # upsampled 4×4 noise: smooth, so a shift keeps most of it
    patterns = (patterns - patterns.mean((1, 2, 3), keepdim=True)) / patterns.std((1, 2, 3), keepdim=True)
    y = (torch.arange(n) % k)[torch.randperm(n, generator=gen)]
    x = _random_crop(patterns[y], max(1, size // 8), gen) * _SYNTHETIC_SIGNAL
    xa, ya = (x + torch.randn(x.shape, generator=gen)).numpy(), y.numpy()
    parts = [(xa[i], ya[i]) for i in _split_indices("synthetic", ya, opts)]
    return _build("synthetic", parts, 1.0, tuple(f"class_{i}" for i in range(k)), opts)
