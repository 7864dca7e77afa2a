"""``OUT/.secret``: the run directory's key, and the signature it makes of a record (the
record's ``digest``, an HMAC-SHA256: :func:`digest_of`; checked by
:func:`compressflow.rundir.records.read_record`).

A plain hash of a record shows a torn file, but anyone who edits a field can recompute it;
a keyed one cannot be recomputed without the key. The key is kept in the run directory (so a
moved or copied run directory still reads its records): it cannot stop someone who can read
the directory, but it stops editing one field and re-hashing, and a record copied from
another run directory (another key) is refused.

The key is 32 random bytes, written as 64 hex digits with mode 0600. It is created once,
atomically: written to a temporary file and hard-linked into place, which fails when the
file exists, so two creators racing (the client at the start of a run, workers writing
records) end with one key, and no reader ever sees a half-written one. It is read with the
bounded regular-file reader (a FIFO or a link to ``/dev/zero`` is refused at once) and
cached per process, keyed by the file's identity, so a worker reads it once, not once per
record.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from compressflow._regular_files import open_regular
from compressflow.errors import InputError, printable

__all__ = ["NAME", "SCHEME", "KeyFileError", "create_key", "digest_of", "read_key", "signature_problem"]

#: the key's file name in the run directory
NAME = ".secret"
#: how a digest begins: its scheme (an earlier version's plain sha256 digest has none)
SCHEME = "hmac-sha256:"

_HEX_DIGITS = 64
_cache: dict[tuple[str, int, int, int], bytes] = {}  # (path, device, inode, mtime) -> key


class KeyFileError(InputError):
    """The key file exists but is not a key (not a regular file, or not 64 hex digits); the
    message (one line) names it and says what is wrong, for the caller to say what to do."""


def read_key(root: str | os.PathLike[str]) -> bytes | None:
    """The key of run directory ``root``, or None when it has none (never creates it).

    Raises
    ------
    KeyFileError
        ``OUT/.secret`` is not a regular file or does not hold 64 hex digits; one line.
    """
    path = Path(root) / NAME
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise KeyFileError(f"run directory key {printable(path)} cannot be read ({exc.strerror})") from None
    cached = _cache.get((str(path), st.st_dev, st.st_ino, st.st_mtime_ns))
    if cached is not None:
        return cached
    try:
        with open_regular(path, 4096, what="run directory key") as fh:
            text, st = fh.read(4097), os.fstat(fh.fileno())
    except FileNotFoundError:
        return None
    except InputError as exc:  # FileRefused: a FIFO, a device, too large
        raise KeyFileError(str(exc)) from None
    except OSError as exc:
        raise KeyFileError(f"run directory key {printable(path)} cannot be read ({exc.strerror})") from None
    try:
        key = bytes.fromhex(text.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) * 2 != _HEX_DIGITS:
        raise KeyFileError(f"run directory key {printable(path)} does not hold {_HEX_DIGITS} hex digits")
    _cache[(str(path), st.st_dev, st.st_ino, st.st_mtime_ns)] = key
    return key


def create_key(root: str | os.PathLike[str]) -> bytes:
    """The key of run directory ``root`` (which must exist), created first when it has none.

    Raises
    ------
    KeyFileError
        The key file exists but is not a key (see :func:`read_key`).
    OSError
        The run directory cannot be written.
    """
    key = read_key(root)
    if key is not None:
        return key
    path = Path(root) / NAME
    fd, tmp = tempfile.mkstemp(dir=root, prefix=f"{NAME}.", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(secrets.token_hex(_HEX_DIGITS // 2) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # fails if it exists: the first creator's key stands
        except FileExistsError:
            pass
        except OSError:  # a filesystem without hard links: exclusive creation, written in place
            _create_in_place(path, Path(tmp).read_text(encoding="ascii"))
    finally:
        Path(tmp).unlink(missing_ok=True)
    key = read_key(root)
    if key is None:  # removed between the two steps: someone is deleting the run directory
        raise KeyFileError(f"run directory key {printable(path)} vanished as it was created")
    return key


def _create_in_place(path: Path, text: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(text)


def digest_of(payload: dict[str, Any], key: bytes) -> str:
    """The signed digest of a record's JSON ``payload`` (without its digest): :data:`SCHEME`
    and the hex HMAC-SHA256, keyed with ``key``, of its canonical JSON.

    >>> digest_of({"key": "train-abc"}, bytes(32))[:20]
    'hmac-sha256:c72626ce'
    """
    canon = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return SCHEME + hmac.new(key, canon.encode(), hashlib.sha256).hexdigest()


def signature_problem(data: dict[str, Any], root: str | os.PathLike[str]) -> str | None:
    """Why the record ``data`` (parsed JSON) is not signed with the key of run directory
    ``root`` — its ``digest`` missing, unsigned (an earlier version's plain sha256), not the
    HMAC of the rest, or no key to check it with —, or None when it is. ``data`` loses its
    digest."""
    digest = data.pop("digest", None)
    if digest is None:
        return "has no digest (written by an earlier version, or edited by hand); it is not trusted"
    if not isinstance(digest, str) or not digest.isascii() or not digest.startswith(SCHEME):
        return ("has a digest not signed with a run directory key (an earlier version's plain sha256, or edited "
                "by hand); it is not trusted")
    try:
        key = read_key(root)
    except KeyFileError as exc:
        return f"cannot be checked ({exc})"
    if key is None:
        return (f"cannot be checked: the run directory has no key {printable(Path(root) / NAME)} (records of "
                f"earlier versions are not trusted)")
    if not hmac.compare_digest(digest, digest_of(data, key)):
        return "content does not match its digest (edited by hand, torn, or signed in another run directory)"
    return None
