"""Datasets by name, held in memory as normalised tensors, plus fast batching and augmentation.

Every dataset is a function registered in :data:`compressflow.registries.DATASETS` that
returns :class:`Splits`; :func:`load_splits` looks it up and caches the result per process.
``digits`` ships with scikit-learn, so the default works offline with no files; ``cifar10``,
``cifar100`` and ``tinyimagenet`` read the official archives, extracted, from a local
``root``; ``synthetic`` is generated from the seed.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import os
import pickle
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from compressflow.errors import DataError, one_line
from compressflow.registries import DATASETS

AUGMENT_OPS: tuple[str, ...] = ("crop", "flip", "rotate")
MAX_ROTATION_DEG = 15.0
_CHUNK = 4096  # images converted at a time, so a large split never exists twice as float32
_IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}
MAX_IMAGE_PIXELS = 4096 * 4096  # a Tiny ImageNet image is 64×64; anything past 16.8 MP is not one (or a bomb)
_LOAD_LOCK = threading.Lock()  # else each thread of a Dask worker would load the same dataset at once
_SYNTHETIC_SIGNAL = 0.25  # pattern amplitude against unit noise: a linear model gets ~80 %, not 100 %


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


# ---------------------------------------------------------------------------- public API


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


def load_splits(dataset: str = "digits", *, image_size: int | None = None, channels: int | None = None,
                val_fraction: float = 0.15, test_fraction: float = 0.2, seed: int = 0,
                root: str | os.PathLike[str] | None = None, augment: tuple[str, ...] | None = None,
                num_samples: int = 1000, num_classes: int = 10) -> Splits:
    """Load a registered dataset as normalised in-memory splits, cached per process.

    Options a dataset does not take are ignored (e.g. ``root`` for ``digits``), so one
    spec ``data:`` block works across datasets, and they do not split the cache.

    Parameters
    ----------
    dataset : str
        A name in ``DATASETS``: ``digits`` (default), ``cifar10``, ``cifar100``,
        ``tinyimagenet``, ``synthetic``.
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
        If ``dataset`` is not registered (the message lists the valid names).
    DataError
        If an option is invalid or files are missing.

    Examples
    --------
    >>> splits = load_splits("digits", image_size=16)
    >>> len(splits.train) + len(splits.val) + len(splits.test), splits.augment
    (1797, ('crop', 'rotate'))
    >>> gen = torch.Generator().manual_seed(0)
    >>> x, y = next(batches(splits.train, 64, shuffle=True, augment=splits.augment, generator=gen))
    >>> tuple(x.shape)
    (64, 3, 16, 16)
    """
    loader = DATASETS.get(dataset)
    given = dict(image_size=image_size, channels=channels, val_fraction=val_fraction, test_fraction=test_fraction,
                 seed=seed, augment=None if augment is None else _check_ops(augment, "augment"),
                 num_samples=num_samples, num_classes=num_classes, root=None if root is None else os.fspath(root))
    params = inspect.signature(loader).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        given = {k: v for k, v in given.items() if k in params}
    key = tuple(sorted(given.items()))
    try:
        hash(key)
    except TypeError:  # e.g. a list as image_size: let the loader reject it with a DataError
        return loader(**given)
    with _LOAD_LOCK:
        return _load_cached(dataset, key)


@functools.lru_cache(maxsize=8)  # a few datasets per worker process; CIFAR is ~0.6 GB as float32
def _load_cached(dataset: str, options: tuple[tuple[str, Any], ...]) -> Splits:
    return DATASETS.get(dataset)(**dict(options))


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
    batch_size = _check_int("batch_size", batch_size, 1)
    ops = _check_ops(augment, "augment")
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
    ops = _check_ops(ops, "ops")
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


# ---------------------------------------------------------------------------- datasets


@DATASETS.register
def digits(*, image_size: int | None = None, channels: int | None = None, val_fraction: float = 0.15,
           test_fraction: float = 0.2, seed: int = 0, augment: tuple[str, ...] | None = None) -> Splits:
    """scikit-learn's bundled handwritten digits: 1,797 real 8×8 grey images, 10 classes.

    Resized bilinearly to ``image_size`` (default 16), grey replicated to ``channels``
    (default 3), split stratified by ``seed``. Default augmentation is crop + rotate, never
    flip: a mirrored digit is a different glyph (or none), so flipping would corrupt labels.
    """
    from sklearn.datasets import load_digits

    opts = _options(image_size, channels, augment, val_fraction, test_fraction, seed, 16, ("crop", "rotate"))
    raw = load_digits()
    x, y = raw.images[:, None], raw.target.astype(np.int64)
    parts = [(x[i], y[i]) for i in _split_indices("digits", y, opts)]
    return _build("digits", parts, 16.0, tuple(map(str, range(10))), opts)


class _CifarLayout(NamedTuple):
    name: str
    folder: str
    train: tuple[str, ...]
    test: str
    meta: str
    label_key: str
    names_key: str
    expected: str  # the files as error messages list them


def _register_cifar(layout: _CifarLayout) -> None:
    def load(*, root: str | None = None, image_size: int | None = None, channels: int | None = None,
             val_fraction: float = 0.15, seed: int = 0, augment: tuple[str, ...] | None = None) -> Splits:
        return _load_cifar(layout, root, _options(image_size, channels, augment, val_fraction, None, seed,
                                                  32, AUGMENT_OPS))

    load.__name__ = load.__qualname__ = layout.name
    load.__doc__ = (f"{layout.name} from the official python-pickle archive under ``root`` (the folder holding "
                    f"``{layout.folder}/``, or that folder). The official test split is the test split; val "
                    "is a stratified ``val_fraction`` of the official train split. Default size 32, 3 channels, "
                    "augmentation crop + flip + rotate (ALGORITHMS §1). The batches are read by a restricted "
                    "unpickler that builds only dicts, lists, bytes/str, numbers and numpy arrays, so a "
                    "crafted file cannot run code: it is refused with a DataError naming the global it asks for.")
    DATASETS.register(load)


_register_cifar(_CifarLayout("cifar10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                             "test_batch", "batches.meta", "labels", "label_names",
                             "data_batch_1..5, test_batch and batches.meta"))
_register_cifar(_CifarLayout("cifar100", "cifar-100-python", ("train",), "test", "meta",
                             "fine_labels", "fine_label_names", "train, test and meta"))


def _load_cifar(layout: _CifarLayout, root: str | None, opts: _Options) -> Splits:
    title = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}.get(layout.name, layout.name)
    where = _locate(layout.name, root, layout.folder, (*layout.train, layout.test, layout.meta),
                    f"no {title} python batches", layout.expected,
                    "the 'python version' archive from the CIFAR site, extracted")
    (names,) = _read_pickle(layout.name, where / layout.meta, layout.names_key)
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, (bytes, str)) for n in names):
        raise DataError(f"{layout.name}: {str(where / layout.meta)!r} has {layout.names_key!r} of type "
                        f"{type(names).__name__}; expected the official non-empty list of class names")
    names = tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names)

    def read(files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for f in files:
            raw_data, raw_labels = _read_pickle(layout.name, where / f, "data", layout.label_key)
            data, labels = _as_array(raw_data, np.uint8), _as_array(raw_labels, np.int64)
            if (data is None or labels is None or data.ndim != 2 or data.shape[1] != 3072
                    or labels.ndim != 1 or len(labels) != len(data)):
                raise DataError(f"{layout.name}: {str(where / f)!r} holds data {_describe(raw_data)} and labels "
                                f"{_describe(raw_labels)}; expected N×3072 uint8 rows (3×32×32, CHW) and N "
                                "integer labels; re-extract the official python archive")
            if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
                raise DataError(f"{layout.name}: {str(where / f)!r} has labels outside 0..{len(names) - 1}")
            xs.append(data.reshape(-1, 3, 32, 32))  # official rows are channel-major: R plane, G, B
            ys.append(labels)
        return np.concatenate(xs), np.concatenate(ys)

    (x, y), test = read(layout.train), read((layout.test,))
    train, val, _ = _split_indices(layout.name, y, opts)
    return _build(layout.name, [(x[train], y[train]), (x[val], y[val]), test], 255.0, names, opts)


@DATASETS.register
def tinyimagenet(*, root: str | None = None, image_size: int | None = None, channels: int | None = None,
                 val_fraction: float = 0.15, seed: int = 0, augment: tuple[str, ...] | None = None) -> Splits:
    """Tiny ImageNet (200 classes, 64×64 RGB) from the official folder layout under ``root``.

    ``root`` holds ``tiny-imagenet-200/`` or is that folder: ``wnids.txt``,
    ``train/<wnid>/images/*.JPEG``, ``val/images/*.JPEG``, ``val/val_annotations.txt`` and
    optionally ``words.txt`` (class names). The official test labels are not public, so the
    official *val* split is the test split here and val is a stratified ``val_fraction`` of
    train. Default size 64, 3 channels, augmentation crop + flip + rotate. An image larger than
    :data:`MAX_IMAGE_PIXELS` is refused from its header, before it is decoded, and any file
    PIL cannot decode is a DataError naming it.
    """
    opts = _options(image_size, channels, augment, val_fraction, None, seed, 64, AUGMENT_OPS)
    where = _locate("tinyimagenet", root, "tiny-imagenet-200", ("wnids.txt", "train", "val/val_annotations.txt"),
                    "no Tiny ImageNet folder", "wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG and "
                    "val/val_annotations.txt", "tiny-imagenet-200.zip from the CS231n site, extracted")
    wnids = _read_text("tinyimagenet", where / "wnids.txt").split()
    index = {w: i for i, w in enumerate(wnids)}
    words = {}
    if (where / "words.txt").exists():
        for line in _read_text("tinyimagenet", where / "words.txt").splitlines():
            wnid, _, text = line.partition("\t")
            words[wnid.strip()] = text.split(",")[0].strip()  # first synonym: short enough for reports
    files, labels = [], []
    for wnid in wnids:
        found = sorted(p for p in (where / "train" / wnid / "images").glob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not found:
            raise DataError(f"tinyimagenet: no images in {str(where / 'train' / wnid / 'images')!r} "
                            f"for class {wnid!r} of wnids.txt")
        files += found
        labels += [index[wnid]] * len(found)
    n = len(files)
    for line in _read_text("tinyimagenet", where / "val" / "val_annotations.txt").splitlines():
        name, wnid = (line.split("\t") + [""])[:2]
        if name.strip():
            if wnid not in index:
                raise DataError(f"tinyimagenet: val_annotations.txt gives {name!r} the class {wnid!r}, "
                                "which is not in wnids.txt")
            files.append(where / "val" / "images" / name)
            labels.append(index[wnid])
    if n == 0 or len(files) == n:
        raise DataError(f"tinyimagenet: {str(where)!r} has no classes in wnids.txt or no "
                        "'filename<TAB>wnid' lines in val/val_annotations.txt")
    x, y = _read_images(files), np.asarray(labels, dtype=np.int64)
    train, val, _ = _split_indices("tinyimagenet", y[:n], opts)
    return _build("tinyimagenet", [(x[train], y[train]), (x[val], y[val]), (x[n:], y[n:])], 255.0,
                  tuple(words.get(w, w) for w in wnids), opts)


@DATASETS.register
def synthetic(*, num_samples: int = 1000, num_classes: int = 10, image_size: int | None = None,
              channels: int | None = None, val_fraction: float = 0.15, test_fraction: float = 0.2,
              seed: int = 0, augment: tuple[str, ...] | None = None) -> Splits:
    """Seeded class-conditional images: a smooth random pattern per class, shifted, plus noise.

    Each sample is its class's low-frequency pattern translated by a few random pixels, plus
    unit pixel noise four times the pattern's amplitude: learnable, not trivially. Classes are
    balanced. Default size 16, 3 channels, augmentation crop only: translations preserve the
    label by construction; flips and rotations are not how the classes were made.
    """
    opts = _options(image_size, channels, augment, val_fraction, test_fraction, seed, 16, ("crop",))
    n, k = _check_int("num_samples", num_samples, 1), _check_int("num_classes", num_classes, 2)
    c, size = opts.channels, opts.size
    gen = torch.Generator().manual_seed(opts.seed)
    patterns = F.interpolate(torch.randn(k, c, 4, 4, generator=gen), size=(size, size), mode="bilinear",
                             align_corners=False)  # upsampled 4×4 noise: smooth, so a shift keeps most of it
    patterns = (patterns - patterns.mean((1, 2, 3), keepdim=True)) / patterns.std((1, 2, 3), keepdim=True)
    y = (torch.arange(n) % k)[torch.randperm(n, generator=gen)]
    x = _random_crop(patterns[y], max(1, size // 8), gen) * _SYNTHETIC_SIGNAL
    x, y = (x + torch.randn(x.shape, generator=gen)).numpy(), y.numpy()
    parts = [(x[i], y[i]) for i in _split_indices("synthetic", y, opts)]
    return _build("synthetic", parts, 1.0, tuple(f"class_{i}" for i in range(k)), opts)


# ---------------------------------------------------------------------------- helpers


class _Options(NamedTuple):
    size: int
    channels: int
    augment: tuple[str, ...]
    val_fraction: float
    test_fraction: float | None  # None: the dataset has an official test split
    seed: int


def _options(image_size: Any, channels: Any, augment: Any, val_fraction: Any, test_fraction: Any, seed: Any,
             default_size: int, default_augment: tuple[str, ...]) -> _Options:
    """Validate the common options before any file is read, so a typo fails in milliseconds."""
    if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
        raise DataError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    for field, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)
                                  or not 0 < value < 1):
            raise DataError(f"{field} must be a number strictly between 0 and 1, got {value!r}")
    if test_fraction is not None and val_fraction + test_fraction >= 1:
        raise DataError(f"val_fraction + test_fraction must be < 1 to leave training data, got "
                        f"{val_fraction} + {test_fraction} = {val_fraction + test_fraction:g}")
    return _Options(default_size if image_size is None else _check_int("image_size", image_size, 4),
                    3 if channels is None else int(channels),
                    default_augment if augment is None else _check_ops(augment, "augment"),
                    float(val_fraction), None if test_fraction is None else float(test_fraction),
                    _check_int("seed", seed, 0))


def _build(name: str, parts: list[tuple[np.ndarray, np.ndarray]], scale: float, class_names: tuple[str, ...],
           opts: _Options) -> Splits:
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


def _split_indices(name: str, y: np.ndarray, opts: _Options) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def _locate(name: str, root: str | os.PathLike[str] | None, inner: str, required: tuple[str, ...],
            what: str, expected: str, source: str) -> Path:
    """The folder (``root/inner`` or ``root``) holding all ``required`` files, else a DataError."""
    if root is None:
        raise DataError(f"{name}: root is required — pass root= the folder containing {inner}/ ({source})")
    base = Path(root).expanduser()
    candidates = (base / inner, base)
    for folder in candidates:
        if all((folder / f).exists() for f in required):
            return folder
    best = max(candidates, key=lambda d: sum((d / f).exists() for f in required))
    missing = [f for f in required if not (best / f).exists()]
    detail = f"; {str(best)!r} lacks {', '.join(missing)}" if len(missing) < len(required) else ""
    raise DataError(f"{name}: {what} under {str(base)!r} — expected {base / inner}/{expected} ({source}){detail}")


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for something a CIFAR batch never holds; the message says what (``global 'posix.system'``)."""


class _NdarrayToken:
    """What ``numpy.ndarray`` unpickles to: numpy names it only as the first argument of
    ``_reconstruct``, so the token stands for it there and refuses to be called (``ndarray(shape)``
    would allocate a size of the file's choosing)."""

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        raise _RefusedGlobal("a call of numpy.ndarray")


_NDARRAY = _NdarrayToken()


def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as Python 3 pickles bytes at protocols 0-2 (always latin-1); any other codec
    (``zlib_codec``, ``base64`` ...) is no part of a bytes round trip and is refused."""
    if encoding.replace("-", "").replace("_", "").lower() not in ("latin1", "iso88591") or not isinstance(text, str):
        raise _RefusedGlobal(f"a call of _codecs.encode with the codec {encoding!r}")
    return text.encode("latin1", errors)


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The callables numpy pickles an ndarray, a dtype and a numpy scalar with, under each module
    spelling they are written with: ``numpy.core`` (numpy 1.x and the Python 2 originals) and
    ``numpy._core`` (numpy 2). Taken from numpy's own ``__reduce__`` so they are the real functions."""
    real_reconstruct = np.zeros(1).__reduce__()[0]

    def reconstruct(cls: Any, shape: Any, dtype: Any) -> np.ndarray:
        # numpy always pickles _reconstruct(ndarray, (0,), b'b') and sets the real shape and bytes in
        # __setstate__, which checks them against the data actually in the file; any other call
        # would allocate whatever size the file names
        if cls is not _NDARRAY or tuple(shape) != (0,):
            raise _RefusedGlobal(f"a call of numpy's _reconstruct with shape {str(shape)[:40]}")
        return real_reconstruct(np.ndarray, (0,), dtype)

    frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # protocol 5: _frombuffer(bytes, dtype, shape, order)
    scalar = np.int64(0).__reduce__()[0]  # scalar(dtype, bytes): a numpy integer in a label list
    found: dict[tuple[str, str], Any] = {("numpy", "ndarray"): _NDARRAY, ("numpy", "dtype"): np.dtype}
    for pkg in ("numpy.core", "numpy._core"):
        found[(f"{pkg}.multiarray", "_reconstruct")] = reconstruct
        found[(f"{pkg}.multiarray", "scalar")] = scalar
        found[(f"{pkg}.numeric", "_frombuffer")] = frombuffer
    return found


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what the official CIFAR python batches (and Python 3 re-pickles of them) hold.

    ``pickle`` runs whatever callable a file names (``os.system``, ``builtins.exec`` ...), and
    :meth:`find_class` is the one door every named global passes through (``GLOBAL``,
    ``STACK_GLOBAL``, ``INST``/``OBJ`` and the copyreg extension codes), so admitting only numpy's
    array, dtype and scalar reconstruction and latin-1 ``_codecs.encode`` leaves a file nothing
    to call. dicts, lists, tuples, bytes, str, int and float need no global at all.
    """

    _allowed = {**_numpy_globals(), ("_codecs", "encode"): _latin1_encode}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _RefusedGlobal(f"global {module + '.' + name!r}") from None

    def persistent_load(self, pid: Any) -> Any:  # no official file refers to objects outside itself
        raise _RefusedGlobal(f"a persistent id ({str(pid)[:40]!r})")


_PICKLE_ALLOWED = "only numpy arrays, lists, dicts, bytes, str, int"


def _read_pickle(name: str, path: Path, *keys: str) -> list[Any]:
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, encoding="bytes").load()  # the official archives were pickled by Python 2
    except _RefusedGlobal as exc:
        raise DataError(f"{name}: refused to unpickle {str(path)!r}: {exc} is not allowed in a "
                        f"CIFAR batch ({_PICKLE_ALLOWED}); re-extract the official python archive") from None
    except Exception as exc:  # truncated or foreign files fail in many ways; all mean "bad file"
        raise DataError(f"{name}: cannot unpickle {str(path)!r} ({type(exc).__name__}: {one_line(exc)}); "
                        "re-extract the official python archive") from None
    if not isinstance(obj, dict):
        raise DataError(f"{name}: {str(path)!r} holds a {type(obj).__name__}, not the official dict format; "
                        "re-extract the official python archive")
    values = []
    for key in keys:  # official files have bytes keys; copies re-pickled under Python 3 may have str
        found = [obj[k] for k in (key.encode(), key) if k in obj]
        if not found:
            raise DataError(f"{name}: {str(path)!r} has no {key!r} entry; expected the official dict format")
        values.append(found[0])
    return values


def _as_array(value: Any, dtype: type) -> np.ndarray | None:
    """``value`` as an array of ``dtype`` when it holds integers in that dtype's range, else None
    (text, floats, ragged lists or out-of-range values in a foreign file are not silently cast)."""
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):  # ragged nested lists
        return None
    if arr.size == 0:
        return arr.astype(dtype)
    info = np.iinfo(dtype)
    if arr.dtype.kind not in "iu" or arr.min() < info.min or arr.max() > info.max:
        return None
    return arr.astype(dtype, copy=False)


def _describe(value: Any) -> str:
    """What a foreign file holds where an array belongs, for an error message."""
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.dtype.kind == "O":
        return f"of type {type(value).__name__}"
    return f"of shape {arr.shape} ({arr.dtype})"


def _read_images(paths: list[Path]) -> np.ndarray:
    """Decode to one (N, 3, H, W) uint8 array at the first image's size, in threads (PIL releases the GIL).

    Each file's header is checked before its pixels are decoded: an image of more than
    :data:`MAX_IMAGE_PIXELS` pixels (Tiny ImageNet's are 64×64) is refused, so a crafted
    "decompression bomb" costs nothing, and every decoding failure is a DataError naming the file.
    """
    from PIL import Image

    def too_large(path: Path, detail: str) -> DataError:
        return DataError(f"tinyimagenet: image {str(path)!r} is too large to be a Tiny ImageNet image ({detail}; "
                         f"at most {MAX_IMAGE_PIXELS:,} pixels are decoded, and the official images are 64×64); "
                         "replace it with the official file")

    def read(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
        try:
            with Image.open(path) as im:  # reads the header only
                if im.width * im.height > MAX_IMAGE_PIXELS:
                    raise too_large(path, f"{im.width}×{im.height} pixels")
                im = im.convert("RGB")
                return np.asarray(im if size is None or im.size == size else im.resize(size, Image.BILINEAR))
        except DataError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # PIL's own, larger limit
            raise too_large(path, one_line(exc)) from None
        except Exception as exc:  # PIL fails in many ways (not an image, truncated, bad header): all mean "bad file"
            raise DataError(f"tinyimagenet: cannot read image {str(path)!r} ({type(exc).__name__}: "
                            f"{one_line(exc)}); replace it with the official file") from None

    with warnings.catch_warnings():
        # PIL warns (and decodes) between its own limit and twice it; our smaller limit refuses those anyway
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        first = read(paths[0])
        out = np.empty((len(paths), *first.shape), dtype=np.uint8)
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            for i, img in enumerate(pool.map(lambda p: read(p, (first.shape[1], first.shape[0])), paths)):
                out[i] = img
    return out.transpose(0, 3, 1, 2)


def _read_text(name: str, path: Path) -> str:
    """A dataset's text file (class lists, annotations), or a DataError naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{name}: cannot read {str(path)!r} as UTF-8 text ({type(exc).__name__}: "
                        f"{one_line(exc)}); re-extract the official archive") from None


def _check_int(field: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DataError(f"{field} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_ops(ops: Any, field: str) -> tuple[str, ...]:
    """Validated ops in the canonical order, so ('flip', 'crop') and ('crop', 'flip') agree."""
    given = (ops,) if isinstance(ops, str) else tuple(ops) if isinstance(ops, (list, tuple, set)) else None
    if given is None:
        raise DataError(f"{field} must be a list of ops from {', '.join(AUGMENT_OPS)}, got {ops!r}")
    unknown = [op for op in given if op not in AUGMENT_OPS]
    if unknown:
        raise DataError(f"{field} has unknown op {unknown[0]!r}; valid choices: {', '.join(AUGMENT_OPS)}")
    return tuple(op for op in AUGMENT_OPS if op in given)


__all__ = ["AUGMENT_OPS", "MAX_IMAGE_PIXELS", "MAX_ROTATION_DEG", "Split", "Splits", "augment_batch", "batches", "biased", "load_splits"]
