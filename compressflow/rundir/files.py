"""Durable files: atomic writes, content hashes of files and trees, and atomically replaced
directory trees (the results store, an activation cache). No torch: checkpoints are
:mod:`compressflow.ops.checkpoints`."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

__all__ = ["artifact_digest", "atomic_write_bytes", "atomic_write_text", "replace_dir", "sha256_file"]


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


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def artifact_digest(path: Path) -> str:
    """sha256 of a file's bytes, or of a directory tree (e.g. a Zarr store): the hash of
    every file's relative path and sha256, in sorted order."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(path).as_posix()}:{sha256_file(f)}".encode())
    return h.hexdigest()


def replace_dir(target: Path, write: Callable[[Path], object]) -> None:
    """Build a directory with ``write(tmp)`` and swap it in for ``target``.

    A crash while writing leaves the previous ``target`` intact (the new tree is built beside
    it and renamed into place only when complete).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    old = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old")
    try:
        write(tmp)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
