"""Loading a registered dataset by name: option filtering, a per-process cache and a load lock,
and the cheap check of a dataset's options and location the client runs before any task."""

from __future__ import annotations

import functools
import inspect
import os
import threading
from typing import TYPE_CHECKING, Any

from compressflow.data.options import check_ops
from compressflow.registries import DATASETS, UnknownNameError

if TYPE_CHECKING:
    from compressflow.data.splits import Splits

__all__ = ["check_data", "load_dataset", "load_splits"]

_LOAD_LOCK = threading.Lock()  # else each thread of a Dask worker would load the same dataset at once


def load_splits(dataset: str = "digits", *, image_size: int | None = None, channels: int | None = None,
                val_fraction: float = 0.15, test_fraction: float = 0.2, seed: int = 0,
                root: str | os.PathLike[str] | None = None, augment: tuple[str, ...] | None = None,
                num_samples: int = 1000, num_classes: int = 10, **ignored: Any) -> Splits:
    """Load a registered classification dataset as normalised in-memory splits, cached per process.

    Options a dataset does not take are ignored (e.g. ``root`` for ``digits``, and the
    detection options of the spec's ``data`` block), so one spec ``data:`` block works across
    datasets, and they do not split the cache.

    Parameters
    ----------
    dataset : str
        A classification dataset of ``DATASETS``: ``digits`` (default), ``cifar10``,
        ``cifar100``, ``tinyimagenet``, ``synthetic``.
    image_size : int, optional
        Side of the square images (>= 4); default per dataset (16, 32, 32, 64, 16).
    channels : int, optional
        1 (grey) or 3 (default; grey datasets replicate their channel).
    val_fraction, test_fraction : float
        Held-out fractions of the whole; where there is an official test split it is the
        test split, ``test_fraction`` is ignored and val is a fraction of the official train.
    seed : int
        Seeds the stratified split (and the images, for ``synthetic``).
    root : str or path, optional
        Folder of the extracted archive; required by ``cifar10``, ``cifar100``, ``tinyimagenet``.
    augment : tuple of str, optional
        Training augmentations to record in the result; default per dataset.
    num_samples, num_classes : int
        Size and number of classes of ``synthetic``.

    Returns
    -------
    Splits
        Shared by every call with the same options: do not modify its tensors in place.

    Raises
    ------
    compressflow.registries.UnknownNameError
        If ``dataset`` is not a registered classification dataset (the message lists the valid names).
    DataError
        If an option is invalid or files are missing.

    Examples
    --------
    >>> splits = load_splits("digits", image_size=16)
    >>> len(splits.train) + len(splits.val) + len(splits.test), splits.augment
    (1797, ('crop', 'rotate'))
    >>> import torch
    >>> from compressflow.data import batches
    >>> gen = torch.Generator().manual_seed(0)
    >>> x, y = next(batches(splits.train, 64, shuffle=True, augment=splits.augment, generator=gen))
    >>> tuple(x.shape)
    (64, 3, 16, 16)
    """
    given = dict(ignored, image_size=image_size, channels=channels, val_fraction=val_fraction,
                 test_fraction=test_fraction, seed=seed, augment=None if augment is None else check_ops(augment, "augment"),
                 num_samples=num_samples, num_classes=num_classes, root=None if root is None else os.fspath(root))
    return load_dataset(dataset, "classification", given)


def load_dataset(dataset: str, task: str, given: dict[str, Any]) -> Any:
    """``loader(**options)`` of the ``task`` dataset ``dataset`` with the ``given`` options its
    signature takes, cached per process (an ``lru_cache`` of ``(loader, sorted options)``: a
    plugin dataset imported again after an edit is a new loader)
    under the process's load lock, so the threads of a worker load a dataset once; options that
    cannot be hashed (a list where a number belongs) go straight to the loader, which rejects
    them with a ``DataError``.

    Raises
    ------
    compressflow.registries.UnknownNameError
        ``dataset`` is not a registered dataset of that task.
    """
    loader = _loader(dataset, task)
    given = _taken(loader, given)
    key = tuple(sorted(given.items()))
    try:
        hash(key)
    except TypeError:
        return loader(**given)
    with _LOAD_LOCK:
        return _load_cached(loader, key)


def check_data(dataset: str, *, locate: bool = True, **options: Any) -> None:
    """Refuse options ``dataset`` cannot take (its registered ``check``: no file is touched) and,
    with ``locate``, a location where its files are not (its ``locate``: no file is read beyond
    finding it). Loading a spec runs the first; the client runs both before any task, instead
    of loading the dataset.

    Raises
    ------
    DataError
        One line naming the option or the missing file.
    """
    info = DATASETS.info(dataset)
    given = {k: v for k, v in options.items() if k != "dataset"}
    for name in ("check", "locate") if locate else ("check",):
        if info[name] is not None:
            info[name](**given)


def _loader(dataset: str, task: str) -> Any:
    if dataset not in DATASETS.list(task=task):
        raise UnknownNameError(DATASETS.unknown_message(dataset, task=task))
    return DATASETS.get(dataset)


def _taken(loader: Any, given: dict[str, Any]) -> dict[str, Any]:
    params = inspect.signature(loader).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return given
    return {k: v for k, v in given.items() if k in params}


@functools.lru_cache(maxsize=8)  # a few datasets per worker process; CIFAR is ~0.6 GB as float32
def _load_cached(loader: Any, options: tuple[tuple[str, Any], ...]) -> Any:
    # keyed by the loader itself: a plugin dataset imported again after an edit loads afresh
    return loader(**dict(options))
