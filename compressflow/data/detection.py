"""Object-detection datasets: their own splits structure, registry and loader.

Detection data is not classification data: an image has any number of objects, each a box
and a label, and images may differ in size. So it has its own :class:`DetectionSplits`
(lists of images and of torchvision-style target dicts) and :func:`load_detection_splits`.
Its datasets are entries of :data:`~compressflow.registries.DATASETS` with
``task="detection"`` (``shapes``, generated from the seed, and ``voc``, the official PASCAL
VOC folders), chosen by the spec's ``data:`` block like every other dataset.

Targets follow torchvision's detection models: ``boxes`` (N, 4) float32 ``x1, y1, x2, y2`` in
pixels (a box spanning pixel columns ``i … j`` has ``x1 = i``, ``x2 = j + 1``), ``labels`` (N,)
int64 in ``1 … num_classes`` (0 is the background torchvision reserves) and ``difficult`` (N,)
bool (VOC's flag; all False for ``shapes``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from compressflow.data.load import load_dataset
from compressflow.errors import DataError

__all__ = ["DetectionSplit", "DetectionSplits", "Target", "detection_batches", "load_detection_splits"]

Target = dict[str, torch.Tensor]


@dataclass(frozen=True, eq=False)  # eq=False: tensors have no single truth value to compare by
class DetectionSplit:
    """One split: ``images`` (uint8, each (3, H, W)), their ``targets`` and ``ids``. Read-only.

    Images are kept as uint8 (a quarter of float32's memory); :meth:`batch` hands out float
    images in [0, 1], which is what torchvision's detectors take (they normalise themselves).
    """

    images: tuple[torch.Tensor, ...]
    targets: tuple[Target, ...]
    ids: tuple[str, ...]

    def __post_init__(self) -> None:
        if not len(self.images) == len(self.targets) == len(self.ids):
            raise DataError(f"DetectionSplit needs as many targets and ids as images, got {len(self.images)} "
                            f"images, {len(self.targets)} targets and {len(self.ids)} ids")
        for image, target, name in zip(self.images, self.targets, self.ids):
            n = len(target["labels"])
            if (image.ndim != 3 or image.shape[0] != 3 or image.dtype != torch.uint8
                    or tuple(target["boxes"].shape) != (n, 4) or len(target["difficult"]) != n):
                raise DataError(f"DetectionSplit: image {name!r} is {tuple(image.shape)} {image.dtype} with boxes "
                                f"{tuple(target['boxes'].shape)} for {n} labels; expected (3, H, W) uint8 and "
                                "(N, 4) boxes, N labels and N difficult flags")

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, indices: Sequence[int]) -> tuple[list[torch.Tensor], list[Target]]:
        """Images ``indices`` as float32 in [0, 1] and copies of their targets."""
        images = [self.images[i].float().div_(255) for i in indices]
        return images, [{k: v.clone() for k, v in self.targets[i].items()} for i in indices]

    @property
    def num_objects(self) -> int:
        """Boxes in the split, difficult ones included."""
        return sum(len(t["labels"]) for t in self.targets)


@dataclass(frozen=True, eq=False)
class DetectionSplits:
    """Train/val/test splits of one detection dataset.

    ``class_names`` names labels ``1 … num_classes``; a torchvision detector for it takes
    ``num_classes + 1`` classes (background included). ``image_size`` is the side of every
    (square) image, or None where images keep their own sizes.
    """

    name: str
    train: DetectionSplit
    val: DetectionSplit
    test: DetectionSplit
    class_names: tuple[str, ...]
    image_size: int | None

    @property
    def num_classes(self) -> int:
        """Foreground classes (labels ``1 … num_classes``)."""
        return len(self.class_names)


def detection_batches(split: DetectionSplit, batch_size: int, *, shuffle: bool = False, flip: bool = False,
                      generator: torch.Generator | None = None) -> Iterator[tuple[list[torch.Tensor], list[Target]]]:
    """Batches of ``split`` as (float images, targets); ``shuffle`` and ``flip`` (a horizontal
    flip of half the images, boxes mirrored) draw from ``generator``.

    Examples
    --------
    >>> splits = load_detection_splits("shapes", image_size=32, num_images=10)
    >>> images, targets = next(detection_batches(splits.train, 4))
    >>> len(images), tuple(images[0].shape), targets[0]["labels"].dtype
    (4, (3, 32, 32), torch.int64)
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    order = torch.randperm(len(split), generator=generator) if shuffle else torch.arange(len(split))
    for start in range(0, len(split), batch_size):
        images, targets = split.batch(order[start:start + batch_size].tolist())
        if flip:
            for i, mirror in enumerate(torch.rand(len(images), generator=generator) < 0.5):
                if mirror:
                    width = images[i].shape[-1]
                    images[i] = images[i].flip(-1)
                    boxes = targets[i]["boxes"]
                    targets[i]["boxes"] = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0],
                                                       boxes[:, 3]], dim=1)
        yield images, targets



def load_detection_splits(dataset: str = "shapes", *, root: str | os.PathLike[str] | None = None,
                          image_size: int | None = None, num_images: int = 300, max_objects: int = 3,
                          val_fraction: float = 0.15, test_fraction: float = 0.2, seed: int = 0,
                          **ignored: Any) -> DetectionSplits:
    """Load a registered detection dataset, cached per process.

    Options a dataset does not take are ignored (``root`` for ``shapes``, ``num_images`` for
    ``voc``; the classification options of the spec's ``data`` block), so one ``data:`` block
    works across datasets.

    Parameters
    ----------
    dataset : str
        A detection dataset of :data:`~compressflow.registries.DATASETS`: ``shapes`` (default)
        or ``voc``.
    root : str or path, optional
        ``voc``: the folder holding ``VOCdevkit/``, ``VOC<year>/``, or the year folder itself.
    image_size : int, optional
        ``shapes``: image side (default 64). ``voc``: resize every image to this square side
        (boxes scaled alike); default: native sizes.
    num_images, max_objects : int
        ``shapes``: images generated, and at most this many objects on each (at least 1).
    val_fraction, test_fraction : float
        ``shapes``: held-out fractions. ``voc`` uses the official splits (see its docs).
    seed : int
        Seeds the generated images (``shapes``) or the val split carved from train (``voc``).

    Returns
    -------
    DetectionSplits
        Shared by every call with the same options: do not modify its tensors in place.

    Raises
    ------
    compressflow.registries.UnknownNameError
        If ``dataset`` is not a registered detection dataset (the message lists the valid names).
    DataError
        If an option is invalid or a file is missing or malformed (the message names it).

    Examples
    --------
    >>> splits = load_detection_splits("shapes", image_size=48, num_images=20, seed=1)
    >>> splits.class_names, (len(splits.train), len(splits.val), len(splits.test))
    (('circle', 'square', 'triangle'), (13, 3, 4))
    """
    given: dict[str, Any] = dict(ignored, root=None if root is None else os.fspath(root), image_size=image_size,
                                 num_images=num_images, max_objects=max_objects, val_fraction=val_fraction,
                                 test_fraction=test_fraction, seed=seed)
    return load_dataset(dataset, "detection", given)
