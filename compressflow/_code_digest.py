"""The digest of a user op's source: what a task key holds so that an edited op runs again.

A built-in op (defined in the ``compressflow`` package) has none: its explicit ``version``
is its code's identity, and its keys never move with a library edit. A user op's digest is
the SHA-256 of the whole file that defines it (a plugin ``.py`` file, the module of a package
or of an installed distribution: helpers beside the op in that file count), or, for an op
defined in ``__main__`` (a notebook cell, a script), of the function's own source (so the rest
of a script, its spec say, does not count). Without either (a function built at run time, a
module shipped as bytecode only) there is none, and an edit cannot be detected.

Only the standard library: the registry (a leaf) computes the digest when an op registers."""

from __future__ import annotations

import hashlib
import inspect
import os
import stat
import sys
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["MAX_SOURCE_BYTES", "code_digest", "is_builtin"]

#: the most bytes of a source file hashed; a larger one counts as having no readable source
MAX_SOURCE_BYTES = 32 * 2**20
#: a script's main module, in the process that runs it and in the workers that import it again
_MAIN = ("__main__", "__mp_main__")

_lock = threading.Lock()
# path -> ((device, inode, size, mtime_ns, ctime_ns), digest): a file is hashed again only
# when it changed, so keying 10,000 tasks of one op stats its file, never re-reads it
_files: dict[str, tuple[tuple[int, ...], str]] = {}


def is_builtin(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is defined in the ``compressflow`` package (its version is its identity).

    Examples
    --------
    >>> import compressflow.engine.keys, json
    >>> is_builtin(compressflow.engine.keys.task_key), is_builtin(json.dumps)
    (True, False)
    """
    module = getattr(fn, "__module__", None) or ""
    return module == "compressflow" or module.startswith("compressflow.")


def code_digest(fn: Callable[..., Any]) -> str | None:
    """The hex SHA-256 of ``fn``'s source as it is on disk now: its module's whole file, or
    for a function of ``__main__`` its own source; None when neither can be read.

    A file is re-read only when its size, times or inode changed since the last call.

    Parameters
    ----------
    fn : callable
        An op function.

    Returns
    -------
    str or None

    Examples
    --------
    >>> import json, hashlib
    >>> with open(json.__file__, "rb") as f:
    ...     code_digest(json.dumps) == hashlib.sha256(f.read()).hexdigest()
    True
    >>> code_digest(len) is None  # no Python source
    True
    """
    module_name = getattr(fn, "__module__", None)
    if module_name not in _MAIN:
        path = _source_file(fn, module_name)
        if path is not None:
            digest = _file_digest(path)
            if digest is not None:
                return digest
    try:
        source = inspect.getsource(fn)
    except Exception:  # noqa: BLE001  # (OSError, TypeError, a tokenizer error): no source; registering must not fail
        return None
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def _source_file(fn: Callable[..., Any], module_name: str | None) -> str | None:
    module = sys.modules.get(module_name) if module_name else None
    path = getattr(module, "__file__", None) or getattr(getattr(fn, "__code__", None), "co_filename", None)
    return path if isinstance(path, str) and path.endswith(".py") else None


def _file_digest(path: str) -> str | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SOURCE_BYTES:  # a FIFO would block the read
        return None
    sig = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    with _lock:
        cached = _files.get(path)
    if cached is not None and cached[0] == sig:
        return cached[1]
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SOURCE_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_SOURCE_BYTES:
        return None
    digest = hashlib.sha256(data).hexdigest()
    with _lock:
        _files[path] = (sig, digest)
    return digest
