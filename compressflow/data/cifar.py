"""``cifar10`` and ``cifar100`` from the official python-pickle archives under ``root``."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from compressflow.data._files import _locate, _read_bytes
from compressflow.data._safe_pickle import _PICKLE_ALLOWED, _CifarUnpickler, _RefusedGlobal
from compressflow.data.options import AUGMENT_OPS, Options, options
from compressflow.errors import DataError, one_line, printable
from compressflow.registries import DATASETS

if TYPE_CHECKING:
    from compressflow.data.splits import Splits

__all__ = ["cifar10", "cifar100"]


class _CifarLayout(NamedTuple):
    name: str
    folder: str
    train: tuple[str, ...]
    test: str
    meta: str
    label_key: str
    names_key: str
    expected: str  # the files as error messages list them
    train_rows: int  # images in each official train file (each test file holds 10,000)

    def limit(self, file: str) -> int:
        """The most bytes ``file`` may hold, checked before unpickling: 3,300 bytes per official
        image (3,072 pixels; its labels and file name take under 60) and 1 MiB to spare (the
        official CIFAR-100 ``train``, 50,000 images, is 155.9 MB; its limit is 166 MB)."""
        rows = self.train_rows if file in self.train else 10_000 if file == self.test else 0
        return rows * 3300 + 2**20


def _register_cifar(layout: _CifarLayout) -> Callable[..., Splits]:
    def load(*, root: str | None = None, image_size: int | None = None, channels: int | None = None,
             val_fraction: float = 0.15, seed: int = 0, augment: tuple[str, ...] | None = None) -> Splits:
        return _load_cifar(layout, root, options(image_size, channels, augment, val_fraction, None, seed,
                                                 32, AUGMENT_OPS))

    def check(*, image_size: int | None = None, channels: int | None = None, val_fraction: float = 0.15,
              seed: int = 0, augment: tuple[str, ...] | None = None, **_: object) -> None:
        options(image_size, channels, augment, val_fraction, None, seed, 32, ())

    def locate(*, root: str | None = None, **_: object) -> None:
        _where(layout, root)

    load.__name__ = load.__qualname__ = layout.name
    load.__doc__ = (f"{layout.name} from the official python-pickle archive under ``root`` (the folder holding "
                    f"``{layout.folder}/``, or that folder). The official test split is the test split; val "
                    "is a stratified ``val_fraction`` of the official train split. Default size 32, 3 channels, "
                    "augmentation crop + flip + rotate (ALGORITHMS §1). Each file must be a regular file no larger "
                    "than its official size allows (checked before it is read), and is read by a restricted "
                    "unpickler that builds only dicts, lists, bytes/str, numbers and numpy arrays, so a "
                    "crafted file cannot run code: it is refused with a DataError naming the global it asks for.")
    return DATASETS.register(load, check=check, locate=locate)


cifar10 = _register_cifar(_CifarLayout("cifar10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                                       "test_batch", "batches.meta", "labels", "label_names",
                                       "data_batch_1..5, test_batch and batches.meta", 10_000))
cifar100 = _register_cifar(_CifarLayout("cifar100", "cifar-100-python", ("train",), "test", "meta",
                                        "fine_labels", "fine_label_names", "train, test and meta", 50_000))


def _where(layout: _CifarLayout, root: str | None) -> Path:
    """The folder holding the archive's files, or a DataError naming what is missing."""
    title = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}.get(layout.name, layout.name)
    return _locate(layout.name, root, layout.folder, (*layout.train, layout.test, layout.meta),
                   f"no {title} python batches", layout.expected,
                   "the 'python version' archive from the CIFAR site, extracted")


def _load_cifar(layout: _CifarLayout, root: str | None, opts: Options) -> Splits:
    from compressflow.data.splits import _build, _split_indices

    where = _where(layout, root)
    (names,) = _read_pickle(layout.name, where / layout.meta, layout.limit(layout.meta), layout.names_key)
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, (bytes, str)) for n in names):
        raise DataError(f"{layout.name}: {str(where / layout.meta)!r} has {layout.names_key!r} of type "
                        f"{type(names).__name__}; expected the official non-empty list of class names")
    names = tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names)

    def read(files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for f in files:
            raw_data, raw_labels = _read_pickle(layout.name, where / f, layout.limit(f), "data", layout.label_key)
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


def _read_pickle(name: str, path: Path, limit: int, *keys: str) -> list[Any]:
    try:
        data = _read_bytes(name, path, limit)  # a regular file (checked on the descriptor) of at most limit bytes
    except OSError as exc:
        raise DataError(f"{name}: cannot read {printable(path)} ({type(exc).__name__}: {one_line(exc)}); "
                        "re-extract the official python archive") from None
    try:
        # the official archives were pickled by Python 2
        obj = _CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
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
