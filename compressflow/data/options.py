"""What every dataset loader checks before it reads a file: the augmentation ops, integers,
fractions and the common options (size, channels, fractions, seed), so a typo fails in
milliseconds, with one :class:`~compressflow.errors.DataError` line. No torch: the spec's
``data`` block is checked with these."""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import numpy as np

from compressflow.errors import DataError, did_you_mean

__all__ = ["AUGMENT_OPS", "MAX_ROTATION_DEG", "Options", "check_fraction", "check_int", "check_ops", "options"]

AUGMENT_OPS: tuple[str, ...] = ("crop", "flip", "rotate")
MAX_ROTATION_DEG = 15.0


def check_int(field: str, value: Any, minimum: int) -> int:
    """``value`` as an int, refusing booleans, non-integers and values below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DataError(f"{field} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_fraction(field: str, value: Any) -> float:
    """``value`` as a float in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise DataError(f"{field} must be a number in [0, 1), got {value!r}")
    return float(value)


def check_ops(ops: Any, field: str) -> tuple[str, ...]:
    """Validated augmentation ops in the canonical order, so ('flip', 'crop') and ('crop', 'flip') agree."""
    given = (ops,) if isinstance(ops, str) else tuple(ops) if isinstance(ops, (list, tuple, set)) else None
    if given is None:
        raise DataError(f"{field} must be a list of ops from {', '.join(AUGMENT_OPS)}, got {ops!r}")
    unknown = [op for op in given if op not in AUGMENT_OPS]
    if unknown:
        raise DataError(f"{field} has unknown op {unknown[0]!r}{did_you_mean(unknown[0], AUGMENT_OPS)}; "
                        f"valid choices: {', '.join(AUGMENT_OPS)}")
    return tuple(op for op in AUGMENT_OPS if op in given)


class Options(NamedTuple):
    """A classification loader's common options, validated."""

    size: int
    channels: int
    augment: tuple[str, ...]
    val_fraction: float
    test_fraction: float | None  # None: the dataset has an official test split
    seed: int


def options(image_size: Any, channels: Any, augment: Any, val_fraction: Any, test_fraction: Any, seed: Any,
            default_size: int, default_augment: tuple[str, ...]) -> Options:
    """Validate the common options before any file is read, so a typo fails in milliseconds."""
    if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
        raise DataError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    for field, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)
                                  or not 0 < float(value) < 1):
            raise DataError(f"{field} must be a number strictly between 0 and 1, got {value!r}")
    if test_fraction is not None and val_fraction + test_fraction >= 1:
        raise DataError(f"val_fraction + test_fraction must be < 1 to leave training data, got "
                        f"{val_fraction} + {test_fraction} = {val_fraction + test_fraction:g}")
    return Options(default_size if image_size is None else check_int("image_size", image_size, 4),
                   3 if channels is None else int(channels),
                   default_augment if augment is None else check_ops(augment, "augment"),
                   float(val_fraction), None if test_fraction is None else float(test_fraction),
                   check_int("seed", seed, 0))
