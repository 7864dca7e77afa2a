"""``voc``: PASCAL VOC detection from the official folder layout under ``root``.

Annotations are untrusted XML: each file must be a regular file (a FIFO or a link to a device
is refused at once), is read with a bound (:data:`MAX_XML_BYTES`) and parsed by ``defusedxml``
with DTDs forbidden, so a ``<!DOCTYPE``, an entity (the "billion laughs" bomb) or an external
reference is refused before anything is expanded. Images vary in size by design: each is
bounded by its header (16.8 MP, and the size its annotation gives), and all of them together by
:data:`MAX_DECODED_BYTES`, checked from the annotations before any image is decoded. Every bad
file — missing, too large, not XML, an unknown class, a box outside its image — is a one-line
DataError naming the file and the problem.
"""

from __future__ import annotations

import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from compressflow.data._files import _check_budget, _check_regular_files, _open_image, _read_bytes, _read_text
from compressflow.data.options import check_fraction, check_int
from compressflow.errors import DataError, one_line, printable
from compressflow.registries import DATASETS

if TYPE_CHECKING:
    from compressflow.data.detection import DetectionSplit, DetectionSplits

__all__ = ["MAX_DECODED_BYTES", "MAX_XML_BYTES", "VOC_CLASSES", "voc"]

#: the 20 PASCAL VOC classes, labels 1 … 20 in this order
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
#: the largest annotation file read (an official one is about 1 KB)
MAX_XML_BYTES = 1 << 20
#: the most bytes the decoded images of one VOC folder may take, at their native sizes or at
#: ``image_size`` (the 11,540 detection images of VOC2012 trainval take about 6.5 GB at native size)
MAX_DECODED_BYTES = 8 * 2**30
_MAX_PIXELS = 4096 * 4096  # an official image is at most 500×500; anything past 16.8 MP is not one (or a bomb)
_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # ids name files: no separators, no "..", no leading dot
_FOLDERS = ("Annotations", "JPEGImages", "ImageSets/Main/train.txt", "ImageSets/Main/val.txt")


class _Annotation(NamedTuple):
    width: int
    height: int
    boxes: np.ndarray  # (n, 4) float32 x1, y1, x2, y2 (0-based, pixel edges)
    labels: np.ndarray  # (n,) int64 in 1..20
    difficult: np.ndarray  # (n,) bool


def _options(year: str = "2007", image_size: int | None = None, val_fraction: float = 0.15,
             **_: object) -> tuple[int | None, float]:
    """``(image size, val fraction)``, validated (no file touched)."""
    if year not in ("2007", "2012"):
        raise DataError(f"voc: year {year!r} is not a VOC detection year; choose from '2007', '2012'")
    size = None if image_size is None else check_int("voc: image_size", image_size, 16)
    return size, check_fraction("voc: val_fraction", val_fraction)


def _check(**options: Any) -> None:
    _options(**options)


def _locate_folder(*, root: str | None = None, year: str = "2007", **_: object) -> None:
    _locate(root, year)


@DATASETS.register(task="detection", check=_check, locate=_locate_folder)
def voc(*, root: str | None = None, year: str = "2007", image_size: int | None = None, val_fraction: float = 0.15,
        seed: int = 0) -> DetectionSplits:
    """PASCAL VOC ``year`` (``"2007"`` or ``"2012"``) from the official layout under ``root``.

    ``root`` holds ``VOCdevkit/VOC<year>/``, or ``VOC<year>/``, or is that folder, with
    ``Annotations/*.xml``, ``JPEGImages/*.jpg`` and ``ImageSets/Main/{train,val}.txt``
    (and ``test.txt`` where the test set is extracted alongside, as VOC2007's may be). The
    official splits are used: train, val, test; without ``test.txt`` the official val is the
    test split and val is a seeded ``val_fraction`` of train. VOC boxes are 1-based inclusive
    pixel indices; they become ``x1 = xmin − 1, y1 = ymin − 1, x2 = xmax, y2 = ymax``.
    ``difficult`` objects are kept, flagged. ``image_size`` resizes every image to a square of
    that side, boxes scaled alike; by default images keep their sizes.
    """
    from compressflow.data.detection import DetectionSplits

    size, frac = _options(year, image_size, val_fraction)
    where = _locate(root, year)
    main = where / "ImageSets" / "Main"
    ids = {name: _read_ids(main / f"{name}.txt") for name in ("train", "val", "test")
           if (main / f"{name}.txt").exists()}
    if "test" not in ids:
        order = np.random.default_rng([int(seed), 0x40C]).permutation(len(ids["train"]))
        n_val = min(len(order) - 1, max(1, round(frac * len(order)))) if len(order) > 1 else 0
        train = [ids["train"][i] for i in sorted(order[n_val:])]
        ids = {"train": train, "val": [ids["train"][i] for i in sorted(order[:n_val])], "test": ids["val"]}
    index = {name: i + 1 for i, name in enumerate(VOC_CLASSES)}
    annotations = {name: [_read_annotation(where / "Annotations" / f"{i}.xml", index) for i in names]
                   for name, names in ids.items()}
    every = [a for anns in annotations.values() for a in anns]
    nbytes = sum(3 * (size * size if size is not None else a.width * a.height) for a in every)
    _check_budget("voc", nbytes, MAX_DECODED_BYTES, f"{len(every):,} images" + (f" at {size}×{size}" if size else ""))
    splits = {name: _read_split(where, names, annotations[name], size) for name, names in ids.items()}
    return DetectionSplits(f"voc{year}", splits["train"], splits["val"], splits["test"], VOC_CLASSES, size)


def _locate(root: str | os.PathLike[str] | None, year: str) -> Path:
    if root is None:
        raise DataError(f"voc: root is required — pass root= the folder containing VOCdevkit/VOC{year}/ "
                        "(VOCtrainval tar from the PASCAL VOC site, extracted)")
    base = Path(root).expanduser()
    candidates = (base / "VOCdevkit" / f"VOC{year}", base / f"VOC{year}", base)
    for folder in candidates:
        if all((folder / f).exists() for f in _FOLDERS):
            _check_regular_files("voc", folder, _FOLDERS)
            return folder
    raise DataError(f"voc: no PASCAL VOC {year} folder under {str(base)!r} — expected "
                    f"{base / 'VOCdevkit' / f'VOC{year}'}/ holding {', '.join(_FOLDERS)}")


def _read_ids(path: Path) -> list[str]:
    ids = []
    for line in _read_text("voc", path).splitlines():
        name = line.split()[0] if line.split() else ""
        if not name:
            continue
        if not _ID.fullmatch(name):
            raise DataError(f"voc: {str(path)!r} lists the image id {name[:60]!r}, which is not a file name "
                            "(letters, digits, '_', '.', '-'); replace it with the official file")
        ids.append(name)
    return ids


def _read_split(where: Path, ids: list[str], annotations: list[_Annotation], size: int | None) -> DetectionSplit:
    import torch

    from compressflow.data.detection import DetectionSplit

    images, targets = [], []
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        pixels = list(pool.map(lambda a: _read_image(where / "JPEGImages" / f"{a[0]}.jpg", a[1], size),
                               zip(ids, annotations)))
    for ann, image in zip(annotations, pixels):
        boxes = ann.boxes
        if size is not None:
            boxes = boxes * np.array([size / ann.width, size / ann.height] * 2, dtype=np.float32)
        images.append(torch.from_numpy(image.transpose(2, 0, 1).copy()))
        targets.append({"boxes": torch.from_numpy(boxes.astype(np.float32)), "labels": torch.from_numpy(ann.labels),
                        "difficult": torch.from_numpy(ann.difficult)})
    return DetectionSplit(tuple(images), tuple(targets), tuple(ids))


def _read_annotation(path: Path, index: dict[str, int]) -> _Annotation:
    """One annotation file, parsed safely and checked (see the module docstring)."""
    from xml.etree.ElementTree import ParseError

    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring

    def bad(problem: str) -> DataError:
        return DataError(f"voc: annotation {printable(path)} {problem}; replace it with the official file")

    try:
        data = _read_bytes("voc", path, MAX_XML_BYTES, what="annotation")
    except OSError as exc:
        raise bad(f"cannot be read ({type(exc).__name__}: {one_line(exc)})") from None
    try:
        root = fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise bad(f"declares a DTD, an entity or an external reference, which are refused ({type(exc).__name__})"
                  ) from None
    except ParseError as exc:
        raise bad(f"is not well-formed XML ({one_line(exc)})") from None
    if root.tag != "annotation":
        raise bad(f"has the root element <{root.tag[:40]}>, not <annotation>")

    def number(parent: Any, tag: str, where: str) -> float:
        node = parent.find(tag)
        text = None if node is None else (node.text or "").strip()
        try:
            return float(text)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise bad(f"has {where}/{tag} {text!r}; expected a number") from None

    width, height = number(root, "size/width", "annotation"), number(root, "size/height", "annotation")
    if width < 1 or height < 1 or width != int(width) or height != int(height):
        raise bad(f"has an image size of {width:g}×{height:g}; expected positive whole pixels")
    if width * height > _MAX_PIXELS:
        raise bad(f"gives an image size of {width:g}×{height:g}, more than the {_MAX_PIXELS:,} pixels decoded")
    boxes, labels, difficult = [], [], []
    for k, obj in enumerate(root.findall("object")):
        name_node = obj.find("name")
        name = "" if name_node is None else (name_node.text or "").strip()
        if name not in index:
            raise bad(f"has object {k} of unknown class {name[:40]!r}; valid classes: {', '.join(index)}")
        flag = obj.find("difficult")
        flag_text = "0" if flag is None else (flag.text or "").strip()
        if flag_text not in ("0", "1"):
            raise bad(f"has object {k} ({name}) with difficult {flag_text[:20]!r}; expected 0 or 1")
        x1, y1, x2, y2 = (number(obj, f"bndbox/{t}", f"object {k}") for t in ("xmin", "ymin", "xmax", "ymax"))
        if not (1 <= x1 <= x2 <= width and 1 <= y1 <= y2 <= height):
            raise bad(f"has object {k} ({name}) with box xmin={x1:g}, ymin={y1:g}, xmax={x2:g}, ymax={y2:g} "
                      f"outside its {width:g}×{height:g} image (VOC boxes are 1-based: 1 <= xmin <= xmax <= width, "
                      "1 <= ymin <= ymax <= height)")
        boxes.append([x1 - 1, y1 - 1, x2, y2])
        labels.append(index[name])
        difficult.append(flag_text == "1")
    return _Annotation(int(width), int(height), np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                       np.asarray(labels, dtype=np.int64), np.asarray(difficult, dtype=bool))


def _read_image(path: Path, ann: _Annotation, size: int | None) -> np.ndarray:
    """(H, W, 3) uint8, checked against its annotation's size from the header before decoding."""
    from PIL import Image

    def bad(problem: str) -> DataError:
        return DataError(f"voc: image {printable(path)} {problem}; replace it with the official file")

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _open_image("voc", path) as fh, Image.open(fh) as im:  # reads the header only
                if im.width * im.height > _MAX_PIXELS:
                    raise bad(f"is {im.width}×{im.height} pixels, more than the {_MAX_PIXELS:,} decoded")
                if (im.width, im.height) != (ann.width, ann.height):
                    raise bad(f"is {im.width}×{im.height} but its annotation says {ann.width}×{ann.height}")
                im = im.convert("RGB")
                if size is not None:
                    im = im.resize((size, size), Image.Resampling.BILINEAR)
                return np.asarray(im, dtype=np.uint8)
    except DataError:
        raise
    except FileNotFoundError:
        raise bad("is missing (every id of ImageSets/Main needs JPEGImages/<id>.jpg)") from None
    except Exception as exc:  # PIL fails in many ways (not an image, truncated, bomb): all mean "bad file"
        raise bad(f"cannot be read ({type(exc).__name__}: {one_line(exc)})") from None
