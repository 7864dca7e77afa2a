"""``OUT/.lock``: held (``fcntl.flock``) by the run working in a run directory, naming its
holder and when it started; read by ``compressflow status`` to tell a live run from a past one.
Used through :class:`compressflow.rundir.RunDir` (:meth:`~compressflow.rundir.RunDir.lock`,
:meth:`~compressflow.rundir.RunDir.state`)."""

from __future__ import annotations

import fcntl
import os
import re
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

from compressflow._regular_files import file_kind
from compressflow.errors import InputError, disk_full, printable

__all__ = ["RunState", "hold", "read_state"]

_STARTED = re.compile(r"started (\S+)")


@dataclass(frozen=True)
class RunState:
    """What ``OUT/.lock`` says: whether a run holds it now (``live``), when the latest run
    started (POSIX seconds; None without a lock file) and its holder line."""

    live: bool
    started: float | None
    holder: str


@contextmanager
def hold(path: Path, root: Path) -> Iterator[None]:
    """Hold the lock file ``path`` of run directory ``root`` for the whole run, so two runs
    never work in one run directory at once; the file names the holder. The kernel drops the
    lock when its process ends, however it ends, so a crashed run leaves nothing to clean up
    (the file stays, with the last holder's details).

    Raises
    ------
    InputError
        Another run holds it, or the filesystem has no locks.
    DiskFull
        No space left to write it.
    """
    try:
        fh = _open_lock(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, "a+")
    except OSError as exc:
        raise disk_full(exc, path) or InputError(f"--out: cannot open the run lock {str(path)!r} "
                                                 f"({exc.strerror}); remove it if it is not a file, or choose "
                                                 f"another --out") from None
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = " ".join(fh.read(500).split()) or "unknown"
            raise InputError(f"--out: {str(root)!r} is in use by another compressflow run ({holder}); "
                             f"wait for it to finish or choose another --out") from None
        except OSError as exc:
            raise InputError(f"--out: cannot lock {str(path)!r} ({exc.strerror}); "
                             f"use a run directory on a filesystem with file locks") from None
        fh.seek(0)
        fh.truncate()
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        line = f"pid {os.getpid()} on host {socket.gethostname()}, started {started}\n"
        try:  # unbuffered: a write that fails is not tried again (and raised again) when the file closes
            os.write(fh.fileno(), line.encode("utf-8"))
        except OSError as exc:
            raise disk_full(exc, path) or InputError(f"--out: cannot write the run lock {printable(path)} "
                                                     f"({exc.strerror}); choose another --out") from None
        yield
    finally:
        fh.close()  # releases the lock


def _open_lock(path: Path, flags: int, mode: str) -> IO[str]:
    """The lock file opened with ``flags`` (text, ``mode``), refusing anything but a regular
    file on the opened descriptor: a FIFO or a device put there is one line, never a hang (the
    open itself is non-blocking)."""
    fd = os.open(path, flags | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        kind = os.fstat(fd).st_mode
        if not stat.S_ISREG(kind):
            raise InputError(f"--out: the run lock {printable(path)} is {file_kind(kind)}, not a regular file; "
                             f"remove it, or choose another --out")
        os.set_blocking(fd, True)
        return open(fd, mode, encoding="utf-8", errors="replace")
    except BaseException:
        os.close(fd)
        raise


def read_state(path: Path) -> RunState:
    """Read the lock file ``path`` and test (``flock`` with ``LOCK_NB``, released at once)
    whether a run holds it. Never creates the file.

    Raises
    ------
    InputError
        The lock cannot be opened (e.g. it is a directory).
    """
    try:
        fh = _open_lock(path, os.O_RDONLY, "r")
    except FileNotFoundError:
        return RunState(False, None, "")
    except OSError as exc:
        raise InputError(f"--out: cannot open the run lock {str(path)!r} ({exc.strerror}); "
                         f"remove it if it is not a file, or choose another --out") from None
    with fh:
        holder = " ".join(fh.read(500).split())
        try:  # shared: two status readers never block each other; a run holds it exclusively
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            live = True
        except OSError:  # a filesystem without locks: no run can be live there either
            live = False
        else:
            live = False
            fcntl.flock(fh, fcntl.LOCK_UN)
    return RunState(live, _started(holder, path), holder)


def _started(holder: str, path: Path) -> float | None:
    """When the latest run started: the lock line's time (whole seconds), refined by the lock
    file's mtime (the run writes the line as it takes the lock) when that falls in the same
    second, so a task that ended in the second before the run started is not taken for one
    of its own. A copied run directory (a new mtime) keeps the line's time."""
    match = _STARTED.search(holder)
    if not match:
        return None
    try:
        started = datetime.fromisoformat(match.group(1)).timestamp()
    except ValueError:
        return None
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return started
    return mtime if started <= mtime < started + 1 else started
