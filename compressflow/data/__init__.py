"""Datasets by name, held in memory as normalised tensors, plus fast batching and augmentation.

Every dataset is a function registered in :data:`compressflow.registries.DATASETS` that
returns :class:`Splits`; :func:`load_splits` looks it up and caches the result per process.
``digits`` ships with scikit-learn, so the default works offline with no files; ``cifar10``,
``cifar100`` and ``tinyimagenet`` read the official archives, extracted, from a local
``root``; ``synthetic`` is generated from the seed.
"""

from __future__ import annotations

# Importing a family's module registers its datasets in DATASETS.
from compressflow.data import cifar, digits, synthetic, tinyimagenet  # noqa: F401
from compressflow.data.augment import AUGMENT_OPS, MAX_ROTATION_DEG, augment_batch, batches
from compressflow.data.load import load_splits
from compressflow.data.splits import Split, Splits, biased
from compressflow.data.tinyimagenet import MAX_IMAGE_PIXELS

__all__ = ["AUGMENT_OPS", "MAX_IMAGE_PIXELS", "MAX_ROTATION_DEG", "Split", "Splits", "augment_batch", "batches",
           "biased", "load_splits"]
