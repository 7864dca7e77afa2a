"""``digits``: scikit-learn's bundled handwritten digits (works offline, no files)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from compressflow.data.options import options
from compressflow.registries import DATASETS

if TYPE_CHECKING:
    from compressflow.data.splits import Splits

__all__ = ["digits"]


def _check(*, image_size: int | None = None, channels: int | None = None, val_fraction: float = 0.15,
           test_fraction: float = 0.2, seed: int = 0, augment: tuple[str, ...] | None = None, **_: object) -> None:
    options(image_size, channels, augment, val_fraction, test_fraction, seed, 16, ())


@DATASETS.register(check=_check)
def digits(*, image_size: int | None = None, channels: int | None = None, val_fraction: float = 0.15,
           test_fraction: float = 0.2, seed: int = 0, augment: tuple[str, ...] | None = None) -> Splits:
    """scikit-learn's bundled handwritten digits: 1,797 real 8×8 grey images, 10 classes.

    Resized bilinearly to ``image_size`` (default 16), grey replicated to ``channels``
    (default 3), split stratified by ``seed``. Default augmentation is crop + rotate, never
    flip: a mirrored digit is a different glyph (or none), so flipping would corrupt labels.
    """
    import numpy as np
    from sklearn.datasets import load_digits

    from compressflow.data.splits import _build, _split_indices

    opts = options(image_size, channels, augment, val_fraction, test_fraction, seed, 16, ("crop", "rotate"))
    raw = load_digits()
    x, y = raw.images[:, None], raw.target.astype(np.int64)
    parts = [(x[i], y[i]) for i in _split_indices("digits", y, opts)]
    return _build("digits", parts, 16.0, tuple(map(str, range(10))), opts)
