"""Exceptions users see. ``InputError`` and subclasses mean "fix your input": the CLI prints
their one-line message and exits 2, with no traceback."""

from __future__ import annotations

import difflib
import errno
import os
from collections.abc import Iterable
from typing import Any


class InputError(ValueError):
    """Bad user input (spec, data location, cluster, output directory).

    The message is one line that names the field, quotes the bad value and says what is valid.
    """


class SpecError(InputError):
    """A pipeline or cluster spec that does not validate."""


class DataError(InputError):
    """A dataset that cannot be loaded as asked (missing files, wrong options)."""


class PluginError(InputError):
    """A plugin that cannot be imported (on the client or on a worker), or an installed entry
    point that fails to load; the message names it and the cause, which is chained."""


class FileRefused(InputError):
    """A file compressflow will not read from a place the user controls: not a regular file (a
    FIFO, a device, a directory, a link where links are refused) or larger than its limit. The
    message is one line naming the file (:mod:`compressflow._regular_files`)."""


class DiskFull(InputError):
    """The disk (or the user's quota) under the run directory filled up while compressflow wrote
    to it. One line naming the device (its mount point) and the file
    (:func:`disk_full` builds it); finished tasks' records stay on disk
    and a re-run with space reuses them."""

    #: the results that could not be written, when the results store was what did not fit (the
    #: CLI prints their summary); None otherwise
    results: Any = None


class MainGuardError(InputError, SystemExit):
    """A script that starts the embedded cluster at its top level, outside
    ``if __name__ == "__main__":`` (the cluster's worker processes re-import it,
    :mod:`compressflow.engine.main_guard`).

    Also a ``SystemExit``: left uncaught, the script ends (status 1) printing this one
    ``compressflow: error:`` line and no traceback; ``except InputError`` still catches it.

    >>> err = MainGuardError("put the call under the guard")
    >>> str(err), err.code, isinstance(err, InputError)
    ('put the call under the guard', 'compressflow: error: put the call under the guard', True)
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.code = f"compressflow: error: {message}"  # what Python prints when it ends the script


class SpecWarning(UserWarning):
    """A spec that validates but probably does not do what was meant (e.g. a schedule that
    leaves almost no epochs at the base learning rate). The CLI prints it as one
    ``compressflow: warning: <message>`` line; the run goes on."""


def one_line(exc: BaseException | str, limit: int = 200) -> str:
    """A library exception's message (or any text) on one line, cut to ``limit`` characters (some span pages),
    for quoting inside an :class:`InputError`."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def did_you_mean(value: object, choices: Iterable[object]) -> str:
    """`` (did you mean 'x'?)`` when ``value`` is a string close to one of ``choices`` (a typo),
    else ``""``: the one hint every "unknown name" message appends after the bad value.

    >>> did_you_mean("trian", ["evaluate", "train", "prune"])
    " (did you mean 'train'?)"
    >>> did_you_mean("adamm", ("sgd", "adam", "adamw"))
    " (did you mean 'adam'?)"
    >>> did_you_mean("zzz", ["train"]), did_you_mean(3, ["train"])
    ('', '')
    """
    if not isinstance(value, str):
        return ""
    names = [c for c in choices if isinstance(c, str)]
    close = difflib.get_close_matches(value, names, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def printable(path: str | os.PathLike[str]) -> str:
    """``path`` quoted for a one-line message: control characters (a NUL, a newline) escaped.

    >>> printable("runs/a\\x00b\\nc")
    "'runs/a\\\\x00b\\\\nc'"
    """
    return repr(os.fspath(path))


def disk_full(exc: BaseException, path: str | os.PathLike[str],
              kept: str = "finished tasks are kept") -> DiskFull | None:
    """The one line for a write that found no space: ``exc`` (or an error it was raised from)
    an ``OSError`` with ``ENOSPC`` or ``EDQUOT`` while writing ``path`` (the error's own file
    name when it has one), saying what is ``kept``; None for any other error.

    >>> print(disk_full(OSError(errno.ENOSPC, "No space left on device"), "/no-such-folder/x.json"))
    no space left on '/' while writing '/no-such-folder/x.json'; finished tasks are kept; free space and run again
    >>> disk_full(PermissionError(errno.EACCES, "Permission denied"), "x.json") is None
    True
    """
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:  # a library may wrap the OSError (zarr, torch)
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            where = os.path.abspath(cause.filename if isinstance(cause.filename, str) else path)
            device = where
            while not os.path.ismount(device) and os.path.dirname(device) != device:
                device = os.path.dirname(device)  # the mount point: the device that is full
            what = "no space left" if cause.errno == errno.ENOSPC else "disk quota exceeded"
            return DiskFull(f"{what} on {printable(device)} while writing {printable(where)}; {kept}; "
                            f"free space and run again")
        cause = cause.__cause__ or cause.__context__
    return None


__all__ = ["DataError", "DiskFull", "did_you_mean", "disk_full", "FileRefused", "InputError", "MainGuardError", "PluginError", "SpecError", "SpecWarning", "one_line", "printable"]
