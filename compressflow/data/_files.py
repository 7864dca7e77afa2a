"""Finding a dataset's extracted archive under ``root`` and reading its text files (private)."""

from __future__ import annotations

import os
from pathlib import Path

from compressflow.errors import DataError, one_line


def _locate(name: str, root: str | os.PathLike[str] | None, inner: str, required: tuple[str, ...],
            what: str, expected: str, source: str) -> Path:
    """The folder (``root/inner`` or ``root``) holding all ``required`` files, else a DataError."""
    if root is None:
        raise DataError(f"{name}: root is required — pass root= the folder containing {inner}/ ({source})")
    base = Path(root).expanduser()
    candidates = (base / inner, base)
    for folder in candidates:
        if all((folder / f).exists() for f in required):
            return folder
    best = max(candidates, key=lambda d: sum((d / f).exists() for f in required))
    missing = [f for f in required if not (best / f).exists()]
    detail = f"; {str(best)!r} lacks {', '.join(missing)}" if len(missing) < len(required) else ""
    raise DataError(f"{name}: {what} under {str(base)!r} — expected {base / inner}/{expected} ({source}){detail}")


def _read_text(name: str, path: Path) -> str:
    """A dataset's text file (class lists, annotations), or a DataError naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{name}: cannot read {str(path)!r} as UTF-8 text ({type(exc).__name__}: "
                        f"{one_line(exc)}); re-extract the official archive") from None
