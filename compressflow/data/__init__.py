"""Datasets by name, held in memory as normalised tensors, plus fast batching and augmentation.

Every dataset is a function registered in :data:`compressflow.registries.DATASETS` that
returns :class:`Splits` (``task="classification"``) or :class:`DetectionSplits`
(``task="detection"``); :func:`load_splits` and :func:`load_detection_splits` look it up and
cache the result per process. ``digits`` ships with scikit-learn, so the default works offline
with no files; ``cifar10``, ``cifar100``, ``tinyimagenet`` and ``voc`` read the official
archives, extracted, from a local ``root``; ``synthetic`` and ``shapes`` are generated from
the seed.

The public names are imported on first use: registering a dataset, and checking a spec's
``data`` block, imports no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lazy_loader as lazy

if TYPE_CHECKING:
    from compressflow.data.augment import augment_batch, batches
    from compressflow.data.detection import DetectionSplit, DetectionSplits, detection_batches, load_detection_splits
    from compressflow.data.load import check_data, load_splits
    from compressflow.data.options import AUGMENT_OPS, MAX_ROTATION_DEG
    from compressflow.data.splits import Split, Splits, biased
    from compressflow.data.tinyimagenet import MAX_IMAGE_PIXELS

__getattr__, __dir__, __all__ = lazy.attach(__name__, submod_attrs={
    "augment": ["augment_batch", "batches"],
    "detection": ["DetectionSplit", "DetectionSplits", "detection_batches", "load_detection_splits"],
    "load": ["check_data", "load_splits"],
    "options": ["AUGMENT_OPS", "MAX_ROTATION_DEG"],
    "splits": ["Split", "Splits", "biased"],
    "tinyimagenet": ["MAX_IMAGE_PIXELS"],
})
