"""Durable files: atomic writes, content hashes of files and trees, and atomically replaced
directory trees (the results store, an activation cache) with the removal of what a killed
replacement left behind. No torch: checkpoints are :mod:`compressflow.ops.checkpoints`.

Hashes read regular files only (:func:`compressflow._regular_files.open_regular`): an
artifact that is a FIFO or a link to ``/dev/zero`` is refused at once, not hashed forever."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from compressflow._regular_files import open_regular

__all__ = ["artifact_digest", "atomic_write_bytes", "atomic_write_text", "remove_stale_replacements", "replace_dir",
           "sha256_file"]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def sha256_file(path: Path, *, what: str = "file") -> str:
    """sha256 of the bytes of the regular file ``path``.

    Raises
    ------
    FileRefused
        ``path`` is not a regular file (a FIFO, a device, a directory); one line naming it
        as ``what``.
    """
    h = hashlib.sha256()
    with open_regular(path, what=what) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def artifact_digest(path: Path, *, what: str = "artifact") -> str:
    """sha256 of a file's bytes, or of a directory tree (e.g. a Zarr store): the hash of
    every file's relative path and sha256, in sorted order.

    Raises
    ------
    FileRefused
        The file, or an entry of the tree, is not a regular file (links to regular files are
        followed; links to directories are refused, not walked).
    """
    path = Path(path)
    if not path.is_dir():
        return sha256_file(path, what=what)
    entries = []
    for folder, dirs, files in os.walk(path):  # links to directories are listed, not walked
        entries += [Path(folder, name) for name in files]
        entries += [Path(folder, name) for name in dirs if os.path.islink(os.path.join(folder, name))]
    h = hashlib.sha256()
    for f in sorted(entries):
        h.update(f"{f.relative_to(path).as_posix()}:{sha256_file(f, what=what)}".encode())
    return h.hexdigest()


def replace_dir(target: Path, write: Callable[[Path], object]) -> None:
    """Build a directory with ``write(tmp)`` and swap it in for ``target``.

    A crash while writing leaves the previous ``target`` intact (the new tree is built beside
    it and renamed into place only when complete).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")  # the names remove_stale_replacements matches
    old = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old")
    try:
        write(tmp)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def remove_stale_replacements(target: Path) -> list[Path]:
    """Remove what :func:`replace_dir` of ``target`` left when its process was killed
    (``.<name>.<8 hex>.tmp`` / ``.old`` beside ``target``); return what was removed.

    Only for a caller that knows no replacement of ``target`` is under way (the run holding
    the run directory's lock): a live one's half-built tree would go too. What cannot be
    removed is left.
    """
    target = Path(target)
    pattern = re.compile(rf"\.{re.escape(target.name)}\.[0-9a-f]{{8}}\.(?:tmp|old)")
    try:
        names = sorted(os.listdir(target.parent))
    except OSError:
        return []
    removed = []
    for name in filter(pattern.fullmatch, names):
        path = target.parent / name
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            continue
        removed.append(path)
    return removed
