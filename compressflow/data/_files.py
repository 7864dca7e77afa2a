"""Finding a dataset's extracted archive under ``root`` and reading its files (private).

A dataset root is a place the user controls: every file is opened by
:func:`compressflow._regular_files.open_regular` (a regular file, checked on the opened
descriptor, so a FIFO or a link to ``/dev/zero`` is refused at once instead of hanging or
filling memory) and read with a bound. A refused file is a one-line :class:`DataError` naming it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from compressflow._regular_files import FileRefused, check_regular, open_regular, read_regular
from compressflow.errors import DataError, one_line, printable

#: the largest text file of a dataset read (class lists, split lists, annotations); the largest
#: official one, Tiny ImageNet's words.txt, is 2.7 MB
MAX_TEXT_BYTES = 16 * 2**20
#: the largest image file opened (an official Tiny ImageNet JPEG is about 2 KB, a VOC one 100 KB)
MAX_IMAGE_BYTES = 64 * 2**20


def _locate(name: str, root: str | os.PathLike[str] | None, inner: str, required: tuple[str, ...],
            what: str, expected: str, source: str) -> Path:
    """The folder (``root/inner`` or ``root``) holding all ``required`` files, else a DataError;
    the required files that are not folders must be regular files (checked here, on the client,
    before any task: a FIFO or a link to a device is refused without being opened)."""
    if root is None:
        raise DataError(f"{name}: root is required — pass root= the folder containing {inner}/ ({source})")
    base = Path(root).expanduser()
    candidates = (base / inner, base)
    for folder in candidates:
        if all((folder / f).exists() for f in required):
            _check_regular_files(name, folder, required)
            return folder
    best = max(candidates, key=lambda d: sum((d / f).exists() for f in required))
    missing = [f for f in required if not (best / f).exists()]
    detail = f"; {str(best)!r} lacks {', '.join(missing)}" if len(missing) < len(required) else ""
    raise DataError(f"{name}: {what} under {str(base)!r} — expected {base / inner}/{expected} ({source}){detail}")


def _check_regular_files(name: str, folder: Path, required: tuple[str, ...]) -> None:
    """Refuse a required file of ``folder`` that is not a folder and not a regular file."""
    for f in required:
        if not (folder / f).is_dir():
            try:
                check_regular(folder / f)
            except FileRefused as exc:
                raise _refused(name, exc) from None


def _refused(name: str, exc: FileRefused) -> DataError:
    return DataError(f"{name}: {exc}; replace it with the official file")


def _read_bytes(name: str, path: Path, limit: int, what: str = "file") -> bytes:
    """At most ``limit`` bytes of a dataset's regular file; a DataError naming it otherwise.

    Raises
    ------
    FileNotFoundError, PermissionError
        As :func:`open`, for the caller to word.
    DataError
        Not a regular file (a FIFO, a device, a directory) or larger than ``limit``.
    """
    try:
        return read_regular(path, limit, what=what)
    except FileRefused as exc:
        raise _refused(name, exc) from None


@contextlib.contextmanager
def _open_image(name: str, path: Path) -> Iterator[BinaryIO]:
    """An image file opened for PIL (``Image.open(fh)``: PIL opening the path itself would block
    on a FIFO), at most :data:`MAX_IMAGE_BYTES`; a DataError naming it otherwise."""
    try:
        with open_regular(path, MAX_IMAGE_BYTES, what="image") as fh:
            yield fh
    except FileRefused as exc:
        raise _refused(name, exc) from None


def _read_text(name: str, path: Path) -> str:
    """A dataset's text file (class lists, annotations), or a DataError naming it."""
    try:
        return _read_bytes(name, path, MAX_TEXT_BYTES).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{name}: cannot read {printable(path)} as UTF-8 text ({type(exc).__name__}: "
                        f"{one_line(exc)}); re-extract the official archive") from None


def _check_budget(name: str, nbytes: int, budget: int, detail: str) -> None:
    """Refuse to allocate ``nbytes`` of decoded images beyond the dataset's ``budget``."""
    if nbytes > budget:
        raise DataError(f"{name}: decoding {detail} needs {nbytes:,} bytes, more than the {budget:,} "
                        "this dataset may take; remove the files that are not part of the official archive")
