"""``shapes``: a detection dataset generated from the seed, offline — coloured circles, squares
and triangles on textured, noisy backgrounds, with exact boxes.

Each image has ``1 … max_objects`` objects that do not overlap (so no object hides part of
another and every box is tight around what is drawn); the labels of all objects are balanced
across the classes (the counts differ by at most one, before the rare object that finds no free
place is dropped). The background is a smooth field of muted colours plus pixel noise; objects
are flat, saturated colours, so a detector has to find shape and colour against texture.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from compressflow.data.options import check_fraction, check_int
from compressflow.errors import DataError
from compressflow.registries import DATASETS

if TYPE_CHECKING:
    from compressflow.data.detection import DetectionSplit, DetectionSplits

__all__ = ["SHAPE_CLASSES", "shapes"]

#: the classes of ``shapes``, labels 1, 2, 3
SHAPE_CLASSES = ("circle", "square", "triangle")
_TRIES = 50  # placements tried per object before it is dropped (rare: objects cover a fraction of the image)


class _Drawn(NamedTuple):
    images: np.ndarray  # (N, H, W, 3) uint8
    backgrounds: np.ndarray  # (N, H, W, 3) uint8: the images before any object was drawn
    boxes: list[np.ndarray]  # per image (n, 4) float32, x1, y1, x2, y2
    labels: list[np.ndarray]  # per image (n,) int64 in 1..3


def _options(image_size: int | None = None, num_images: int = 300, max_objects: int = 3, val_fraction: float = 0.15,
             test_fraction: float = 0.2, **_: object) -> tuple[int, int, int, int]:
    """``(size, images, val images, test images)``, validated."""
    size = check_int("shapes: image_size", 64 if image_size is None else image_size, 24)
    n = check_int("shapes: num_images", num_images, 3)
    check_int("shapes: max_objects", max_objects, 1)
    val, test = (check_fraction("shapes: val_fraction", val_fraction),
                 check_fraction("shapes: test_fraction", test_fraction))
    n_val, n_test = round(val * n), round(test * n)
    if n - n_val - n_test < 1:
        raise DataError(f"shapes: val_fraction={val_fraction} and test_fraction={test_fraction} leave no "
                        f"training image of num_images={n}; lower them or raise num_images")
    return size, n, n_val, n_test


def _check(**options: object) -> None:
    _options(**options)  # type: ignore[arg-type]


@DATASETS.register(task="detection", check=_check)
def shapes(*, image_size: int | None = None, num_images: int = 300, max_objects: int = 3,
           val_fraction: float = 0.15, test_fraction: float = 0.2, seed: int = 0) -> DetectionSplits:
    """Coloured circles, squares and triangles on textured backgrounds, generated from ``seed``.

    The first ``1 − val_fraction − test_fraction`` of the ``num_images`` images are train, then
    val, then test (every image is drawn independently, so the order is as random as any split).
    ``image_size`` defaults to 64 (at least 24: an object's radius is ``image_size / 12`` to
    ``image_size / 5``, at least 3 pixels).
    """
    import torch

    from compressflow.data.detection import DetectionSplit, DetectionSplits

    size, n, n_val, n_test = _options(image_size, num_images, max_objects, val_fraction, test_fraction)
    drawn = _draw(seed, size, n, max_objects)
    parts = (range(0, n - n_val - n_test), range(n - n_val - n_test, n - n_test), range(n - n_test, n))

    def split(indices: range) -> DetectionSplit:
        return DetectionSplit(
            images=tuple(torch.from_numpy(drawn.images[i].transpose(2, 0, 1).copy()) for i in indices),
            targets=tuple({"boxes": torch.from_numpy(drawn.boxes[i]), "labels": torch.from_numpy(drawn.labels[i]),
                           "difficult": torch.zeros(len(drawn.labels[i]), dtype=torch.bool)} for i in indices),
            ids=tuple(f"shapes-{i:05d}" for i in indices))

    train, val_split, test_split = (split(p) for p in parts)
    return DetectionSplits("shapes", train, val_split, test_split, SHAPE_CLASSES, size)


def _draw(seed: int, size: int, n: int, max_objects: int) -> _Drawn:
    """Every image, its background, boxes and labels; depends on the arguments only."""
    rng = np.random.default_rng([int(seed), 0x5BA9E5])  # its own stream, apart from other uses of the seed
    counts = rng.integers(1, max_objects + 1, size=n)
    pool = rng.permutation(np.resize(np.arange(1, len(SHAPE_CLASSES) + 1), int(counts.sum())))
    starts = np.concatenate([[0], np.cumsum(counts)])
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    backgrounds = np.empty_like(images)
    all_boxes, all_labels = [], []
    centres = np.arange(size) + 0.5  # pixel i covers [i, i + 1): its centre is i + 0.5
    for i in range(n):
        background = _background(rng, size)
        image = background.copy()
        boxes: list[list[float]] = []
        labels: list[int] = []
        for label in pool[starts[i]:starts[i + 1]]:
            placed = _place(rng, size, int(label), centres, boxes)
            if placed is None:
                continue
            mask, box = placed
            image[mask] = _colour(rng)
            boxes.append(box)
            labels.append(int(label))
        images[i], backgrounds[i] = image, background
        all_boxes.append(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
        all_labels.append(np.asarray(labels, dtype=np.int64))
    return _Drawn(images, backgrounds, all_boxes, all_labels)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth field of muted colours (a random 4×4 grid, bilinearly upsampled) plus pixel noise."""
    from PIL import Image

    grey = rng.uniform(70, 180, size=(4, 4, 1))
    coarse = np.clip(grey + rng.uniform(-18, 18, size=(4, 4, 3)), 0, 255).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BILINEAR), dtype=np.float64)
    return np.clip(smooth + rng.normal(0, 10, size=smooth.shape), 0, 255).astype(np.uint8)


def _colour(rng: np.random.Generator) -> np.ndarray:
    """A saturated colour: full value and saturation at a random hue (far from the muted background)."""
    hue = rng.uniform(0, 6)
    k = (np.array([5.0, 3.0, 1.0]) + hue) % 6
    return np.round(255 * (1 - np.clip(np.minimum(k, 4 - k), 0, 1))).astype(np.uint8)


def _place(rng: np.random.Generator, size: int, label: int, centres: np.ndarray,
           taken: list[list[float]]) -> tuple[np.ndarray, list[float]] | None:
    """A mask and its tight box for a new object clear of the ``taken`` boxes (1 px apart), or None."""
    low, high = max(3.0, size / 12), max(3.0, size / 5)
    for _ in range(_TRIES):
        r = rng.uniform(low, high)
        cx, cy = rng.uniform(r + 1, size - r - 1, size=2)
        dx, dy = centres[None, :] - cx, centres[:, None] - cy
        if label == 1:  # circle of radius r
            mask = dx**2 + dy**2 <= r**2
        elif label == 2:  # axis-aligned square of side 2r
            mask = (np.abs(dx) <= r) & (np.abs(dy) <= r)
        else:  # triangle, apex up, base 2r wide at the bottom
            mask = (dy <= r) & (np.abs(dx) <= (dy + r) / 2)
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:
            continue
        box = [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]
        if all(box[0] > t[2] or t[0] > box[2] or box[1] > t[3] or t[1] > box[3] for t in taken):
            return mask, box
    return None
