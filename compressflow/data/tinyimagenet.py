"""``tinyimagenet`` from the official folder layout under ``root``, with a pixel limit per image."""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compressflow.data._files import _check_budget, _locate, _open_image, _read_text
from compressflow.data.options import AUGMENT_OPS, options
from compressflow.errors import DataError, one_line, printable
from compressflow.registries import DATASETS

if TYPE_CHECKING:
    from compressflow.data.splits import Splits

__all__ = ["MAX_DECODED_BYTES", "MAX_IMAGE_PIXELS", "tinyimagenet"]

_IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}
MAX_IMAGE_PIXELS = 4096 * 4096  # a Tiny ImageNet image is 64×64; anything past 16.8 MP is not one (or a bomb)
#: the most bytes the decoded images of one Tiny ImageNet folder may take (the official 110,000
#: images, 64×64 RGB, take 1.35 GB), checked before the array is allocated
MAX_DECODED_BYTES = 2 * 2**30


def _where(root: str | None) -> Path:
    """The ``tiny-imagenet-200`` folder under ``root``, or a DataError naming what is missing."""
    return _locate("tinyimagenet", root, "tiny-imagenet-200", ("wnids.txt", "train", "val/val_annotations.txt"),
                   "no Tiny ImageNet folder", "wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG and "
                   "val/val_annotations.txt", "tiny-imagenet-200.zip from the CS231n site, extracted")


def _check(*, image_size: int | None = None, channels: int | None = None, val_fraction: float = 0.15, seed: int = 0,
           augment: tuple[str, ...] | None = None, **_: object) -> None:
    options(image_size, channels, augment, val_fraction, None, seed, 64, ())


def _locate_folder(*, root: str | None = None, **_: object) -> None:
    _where(root)


@DATASETS.register(check=_check, locate=_locate_folder)
def tinyimagenet(*, root: str | None = None, image_size: int | None = None, channels: int | None = None,
                 val_fraction: float = 0.15, seed: int = 0, augment: tuple[str, ...] | None = None) -> Splits:
    """Tiny ImageNet (200 classes, 64×64 RGB) from the official folder layout under ``root``.

    ``root`` holds ``tiny-imagenet-200/`` or is that folder: ``wnids.txt``,
    ``train/<wnid>/images/*.JPEG``, ``val/images/*.JPEG``, ``val/val_annotations.txt`` and
    optionally ``words.txt`` (class names). The official test labels are not public, so the
    official *val* split is the test split here and val is a stratified ``val_fraction`` of
    train. Default size 64, 3 channels, augmentation crop + flip + rotate.

    Every file must be a regular file (a FIFO or a link to a device is refused at once). An
    image larger than :data:`MAX_IMAGE_PIXELS` is refused from its header, before it is
    decoded; every image must have the first one's size (the official ones are all 64×64;
    grayscale ones are converted to RGB), and their decoded total may not pass
    :data:`MAX_DECODED_BYTES`, checked before anything is allocated. Each of these, and any
    file PIL cannot decode, is a DataError naming the file.
    """
    from compressflow.data.splits import _build, _split_indices

    opts = options(image_size, channels, augment, val_fraction, None, seed, 64, AUGMENT_OPS)
    where = _where(root)
    wnids = _names(_read_text("tinyimagenet", where / "wnids.txt").split(), "wnids.txt")
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
            _names([name], "val/val_annotations.txt")
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


def _read_images(paths: list[Path]) -> np.ndarray:
    """Decode to one (N, 3, H, W) uint8 array at the first image's size, in threads (PIL releases the GIL).

    Each file's header is checked before its pixels are decoded: an image of more than
    :data:`MAX_IMAGE_PIXELS` pixels (Tiny ImageNet's are 64×64) is refused, so a crafted
    "decompression bomb" costs nothing, as is one whose size differs from the first image's;
    the array's size is checked against :data:`MAX_DECODED_BYTES` before it is allocated.
    Every failure is a DataError naming the file.
    """
    from PIL import Image

    def too_large(path: Path, detail: str) -> DataError:
        return DataError(f"tinyimagenet: image {printable(path)} is too large to be a Tiny ImageNet image ({detail}; "
                         f"at most {MAX_IMAGE_PIXELS:,} pixels are decoded, and the official images are 64×64); "
                         "replace it with the official file")

    def read(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
        try:
            with _open_image("tinyimagenet", path) as fh, Image.open(fh) as im:  # reads the header only
                if im.width * im.height > MAX_IMAGE_PIXELS:
                    raise too_large(path, f"{im.width}×{im.height} pixels")
                if size is not None and im.size != size:
                    raise DataError(f"tinyimagenet: image {printable(path)} is {im.width}×{im.height} pixels, but "
                                    f"{printable(paths[0])} is {size[0]}×{size[1]}: all images of the set must have "
                                    "one size (the official ones are 64×64); replace it with the official file")
                return np.asarray(im.convert("RGB"))
        except DataError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # PIL's own, larger limit
            raise too_large(path, one_line(exc)) from None
        except Exception as exc:  # PIL fails in many ways (not an image, truncated, bad header): all mean "bad file"
            raise DataError(f"tinyimagenet: cannot read image {printable(path)} ({type(exc).__name__}: "
                            f"{one_line(exc)}); replace it with the official file") from None

    with warnings.catch_warnings():
        # PIL warns (and decodes) between its own limit and twice it; our smaller limit refuses those anyway
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        first = read(paths[0])
        height, width = first.shape[:2]
        _check_budget("tinyimagenet", len(paths) * first.nbytes, MAX_DECODED_BYTES,
                      f"{len(paths):,} images of {width}×{height} pixels (the size of {printable(paths[0])})")
        out = np.empty((len(paths), *first.shape), dtype=np.uint8)
        out[0] = first
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            for i, img in enumerate(pool.map(lambda p: read(p, (width, height)), paths[1:]), start=1):
                out[i] = img
    return out.transpose(0, 3, 1, 2)


def _names(names: list[str], source: str) -> list[str]:
    """``names`` (class ids, image file names) read from ``source``, refusing one that is not a
    plain file name: it becomes a path under the dataset folder and must stay there."""
    for name in names:
        if name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
            raise DataError(f"tinyimagenet: {source} names {printable(name)}, which is not a plain file name "
                            f"(no '/', '..' or NUL); re-extract the official archive")
    return names
