"""Setup functions of the bad-input matrix: ``SETUPS[name](tmp, out)`` prepares the files a
case needs (a crafted dataset file, a corrupted store, ...) before its command runs.

Each area keeps its functions together in its own block; register them with ``@setup``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

SETUPS: dict[str, Callable[[Path, Path], None]] = {}


def setup(fn: Callable[[Path, Path], None]) -> Callable[[Path, Path], None]:
    if fn.__name__ in SETUPS:
        raise ValueError(f"duplicate bad-input setup {fn.__name__!r}")
    SETUPS[fn.__name__] = fn
    return fn


@setup
def out_is_a_file(tmp: Path, out: Path) -> None:
    """The run directory path exists as a regular file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("not a directory\n")
