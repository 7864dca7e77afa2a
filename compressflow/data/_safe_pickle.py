"""The restricted unpickler for CIFAR's python batches: only numpy arrays and plain data (private)."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for something a CIFAR batch never holds; the message says what (``global 'posix.system'``)."""


class _NdarrayToken:
    """What ``numpy.ndarray`` unpickles to: numpy names it only as the first argument of
    ``_reconstruct``, so the token stands for it there and refuses to be called (``ndarray(shape)``
    would allocate a size of the file's choosing)."""

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        raise _RefusedGlobal("a call of numpy.ndarray")


_NDARRAY = _NdarrayToken()


def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as Python 3 pickles bytes at protocols 0-2 (always latin-1); any other codec
    (``zlib_codec``, ``base64`` ...) is no part of a bytes round trip and is refused."""
    if encoding.replace("-", "").replace("_", "").lower() not in ("latin1", "iso88591") or not isinstance(text, str):
        raise _RefusedGlobal(f"a call of _codecs.encode with the codec {encoding!r}")
    return text.encode("latin1", errors)


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The callables numpy pickles an ndarray, a dtype and a numpy scalar with, under each module
    spelling they are written with: ``numpy.core`` (numpy 1.x and the Python 2 originals) and
    ``numpy._core`` (numpy 2). Taken from numpy's own ``__reduce__`` so they are the real functions."""
    real_reconstruct: Any = np.zeros(1).__reduce__()[0]

    def reconstruct(cls: Any, shape: Any, dtype: Any) -> np.ndarray:
        # numpy always pickles _reconstruct(ndarray, (0,), b'b') and sets the real shape and bytes in
        # __setstate__, which checks them against the data actually in the file; any other call
        # would allocate whatever size the file names
        if cls is not _NDARRAY or tuple(shape) != (0,):
            raise _RefusedGlobal(f"a call of numpy's _reconstruct with shape {str(shape)[:40]}")
        return real_reconstruct(np.ndarray, (0,), dtype)

    frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # protocol 5: _frombuffer(bytes, dtype, shape, order)
    scalar = np.int64(0).__reduce__()[0]  # scalar(dtype, bytes): a numpy integer in a label list
    found: dict[tuple[str, str], Any] = {("numpy", "ndarray"): _NDARRAY, ("numpy", "dtype"): np.dtype}
    for pkg in ("numpy.core", "numpy._core"):
        found[(f"{pkg}.multiarray", "_reconstruct")] = reconstruct
        found[(f"{pkg}.multiarray", "scalar")] = scalar
        found[(f"{pkg}.numeric", "_frombuffer")] = frombuffer
    return found


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what the official CIFAR python batches (and Python 3 re-pickles of them) hold.

    ``pickle`` runs whatever callable a file names (``os.system``, ``builtins.exec`` ...), and
    :meth:`find_class` is the one door every named global passes through (``GLOBAL``,
    ``STACK_GLOBAL``, ``INST``/``OBJ`` and the copyreg extension codes), so admitting only numpy's
    array, dtype and scalar reconstruction and latin-1 ``_codecs.encode`` leaves a file nothing
    to call. dicts, lists, tuples, bytes, str, int and float need no global at all.
    """

    _allowed = {**_numpy_globals(), ("_codecs", "encode"): _latin1_encode}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _RefusedGlobal(f"global {module + '.' + name!r}") from None

    def persistent_load(self, pid: Any) -> Any:  # no official file refers to objects outside itself
        raise _RefusedGlobal(f"a persistent id ({str(pid)[:40]!r})")


_PICKLE_ALLOWED = "only numpy arrays, lists, dicts, bytes, str, int"
