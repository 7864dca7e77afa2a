"""Reading files from places a user controls (a spec's folder, a ``--plugin`` folder, a dataset
root, a run directory) without hanging or exhausting memory.

``stat()`` of a path says nothing useful about a device or a FIFO (0 bytes), and opening a FIFO
for reading blocks until a writer appears. So every such file is opened non-blocking, checked
to be a regular file *on the opened descriptor* (a path swapped between a check and the open
cannot slip through), and read with a bound: a symlink to ``/dev/zero`` or a FIFO is refused
at once with one line naming it, and a file larger than its limit is refused before more than
the limit is read.

Writing there may find the disk full: :func:`disk_full` turns that ``OSError`` into the one
line the user sees (:class:`~compressflow.errors.DiskFull`), wherever compressflow writes.

Examples
--------
>>> import os, tempfile
>>> folder = tempfile.mkdtemp()
>>> path = os.path.join(folder, "wnids.txt")
>>> _ = open(path, "w").write("n01443537\\n")
>>> read_regular_text(path, 1024, what="Tiny ImageNet class list")
'n01443537\\n'
>>> os.mkfifo(os.path.join(folder, "fifo"))
>>> read_regular(os.path.join(folder, "fifo"), 1024, what="record")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
compressflow.errors.FileRefused: record '...fifo' is a FIFO, not a regular file
>>> read_regular(path, 4, what="record")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
compressflow.errors.FileRefused: record '...wnids.txt' is larger than its limit of 4 bytes (10 bytes)
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from compressflow.errors import FileRefused, printable

__all__ = ["FileRefused", "check_regular", "file_kind", "is_within", "open_regular",
           "read_regular", "read_regular_text"]

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link"))



def file_kind(mode: int) -> str:
    """What a ``st_mode`` is, in words (``"a FIFO"``, ``"a regular file"``, ...)."""
    return next((name for test, name in _KINDS if test(mode)), "a regular file" if stat.S_ISREG(mode)
                else "not a regular file")


def check_regular(path: str | os.PathLike[str], *, what: str = "file") -> os.stat_result:
    """Refuse ``path`` unless it is (or links to) a regular file; its ``stat`` when it is.

    For trees read by a library that opens files itself (a Zarr store): checked on the path,
    which does not block on a FIFO; :func:`open_regular` checks on the descriptor.

    Raises
    ------
    FileNotFoundError
        Nothing there (or a broken link).
    FileRefused
        Anything but a regular file.
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise FileRefused(f"{what} {printable(path)} is {file_kind(st.st_mode)}, not a regular file")
    return st


@contextlib.contextmanager
def open_regular(path: str | os.PathLike[str], limit: int | None = None, *, what: str = "file",
                 follow_symlinks: bool = True) -> Iterator[BinaryIO]:
    """Open ``path`` for reading in binary mode, refusing anything but a regular file (checked
    on the descriptor) and, with ``limit``, a file of more than ``limit`` bytes.

    The open never blocks: a FIFO is opened non-blocking, found to be a FIFO and refused.

    Parameters
    ----------
    path : path
    limit : int, optional
        Most bytes the file may hold (its size when opened; :func:`read_regular` also bounds
        the read itself, for a file that grows).
    what : str
        What the file is, for the message (``"record"``, ``"plugin file"``).
    follow_symlinks : bool
        False refuses a symbolic link itself (``O_NOFOLLOW``).

    Raises
    ------
    FileNotFoundError
        Nothing at ``path``.
    FileRefused
        Not a regular file, or larger than ``limit``; one line naming the file.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if not follow_symlinks and exc.errno == getattr(os, "ELOOP", -1) and os.path.islink(path):
            raise FileRefused(f"{what} {printable(path)} is a symbolic link; links are not followed here") from None
        if isinstance(exc, (FileNotFoundError, PermissionError)):
            raise
        raise FileRefused(f"{what} {printable(path)} cannot be opened ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(f"{what} {printable(path)} is {file_kind(st.st_mode)}, not a regular file")
        if limit is not None and st.st_size > limit:
            raise FileRefused(f"{what} {printable(path)} is larger than its limit of {limit} bytes "
                              f"({st.st_size} bytes)")
        os.set_blocking(fd, True)
        fh = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with fh:
        yield fh


def read_regular(path: str | os.PathLike[str], limit: int, *, what: str = "file",
                 follow_symlinks: bool = True) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them (:func:`open_regular`).

    Raises
    ------
    FileNotFoundError
    FileRefused
        Not a regular file, or more than ``limit`` bytes (never more than ``limit + 1`` read).
    """
    with open_regular(path, limit, what=what, follow_symlinks=follow_symlinks) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise FileRefused(f"{what} {printable(path)} is larger than its limit of {limit} bytes")
    return data


def read_regular_text(path: str | os.PathLike[str], limit: int, *, what: str = "file",
                      follow_symlinks: bool = True) -> str:
    """:func:`read_regular` decoded as UTF-8.

    Raises
    ------
    FileRefused
        Also for bytes that are not UTF-8.
    """
    data = read_regular(path, limit, what=what, follow_symlinks=follow_symlinks)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileRefused(f"{what} {printable(path)} is not UTF-8 text (byte {exc.start})") from None


def is_within(path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> bool:
    """Whether ``path``, links resolved, lies inside ``folder`` (links resolved); False for a
    path that cannot be resolved (a loop of symbolic links)."""
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
    except (ValueError, RuntimeError, OSError):  # outside; a loop of links (RuntimeError before Python 3.13)
        return False
    return True
