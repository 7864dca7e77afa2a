"""A real small filesystem for tests of a full disk: :func:`mounted_tmpfs` mounts a tmpfs of
:data:`SIZE` bytes on a folder and unmounts it after (the ``small_disk`` fixture); :func:`fill`
uses up its space.

Mounting needs root (or ``CAP_SYS_ADMIN``); where it is not permitted (an unprivileged user, a
container without the capability) the tests that use it are skipped, saying so."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

#: bytes the tmpfs holds: a tiny study's run directory (records, attempt logs, a results store
#: of about 300 kB) fits, with room to spare
SIZE = 2 * 2**20


@contextlib.contextmanager
def mounted_tmpfs(folder: Path) -> Iterator[Path]:
    """Mount a tmpfs of :data:`SIZE` bytes on the empty folder ``folder`` for the block
    (``pytest.skip`` where mounting is not permitted); unmounted after. The ``small_disk``
    fixture (tests/conftest.py) is this in a test's temporary folder."""
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(folder)],
                             capture_output=True, text=True, timeout=30, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root or CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], capture_output=True, timeout=30, check=True)


def fill(disk: Path) -> Path:
    """Write ``disk/fill`` until the filesystem has no byte left; return it (delete it to free the space)."""
    path = disk / "fill"
    block = b"\0" * 4096
    with open(path, "wb", buffering=0) as fh:
        while True:
            try:
                fh.write(block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    assert os.statvfs(disk).f_bavail == 0
    return path
