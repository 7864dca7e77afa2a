"""Spec warnings point at the spec, not at compressflow's code.

An op's spec-time check warns (:class:`~compressflow.errors.SpecWarning`) from inside
compressflow; Python would show the warning at the check's ``warnings.warn`` line and print that
source line under it. :func:`spec_warnings` re-issues each spec warning at the stage's line of the
spec file (Python then shows that YAML line), or, for a spec given as a mapping, at the user's
line that loaded it."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

from compressflow.errors import SpecWarning

__all__ = ["spec_warnings"]

_PACKAGE = str(Path(__file__).resolve().parents[1]) + os.sep
_CONTEXTLIB = contextlib.__file__  # the block's exit runs in contextlib's frame


@contextlib.contextmanager
def spec_warnings(path: str | os.PathLike | None, line: int | None) -> Iterator[None]:
    """Re-issue the :class:`SpecWarning` s raised in the block at ``path``:``line`` (the spec file
    and the line of what they are about; 0 when not known), or at the first caller outside
    compressflow when ``path`` is None; other warnings pass unchanged. The warning filters in
    force outside the block apply (``-W error::...SpecWarning`` still raises)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        if issubclass(w.category, SpecWarning):
            filename, lineno = (os.fspath(path), line or 0) if path is not None else _user_line()
            warnings.warn_explicit(w.message, w.category, filename, lineno)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def _user_line() -> tuple[str, int]:
    """The file and line of the innermost caller outside the compressflow package."""
    frame = sys._getframe(1)
    while frame.f_back is not None and (frame.f_code.co_filename.startswith(_PACKAGE)
                                        or frame.f_code.co_filename == _CONTEXTLIB):
        frame = frame.f_back
    return frame.f_code.co_filename, frame.f_lineno
