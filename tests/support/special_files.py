"""Files that are not regular files, as users meet them (a FIFO, a link to ``/dev/zero``), and a
guard that turns a read that hangs on one into a failing test instead of a hung suite."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: what :func:`make_special` makes, with the words a refusal uses for it
SPECIAL = {"fifo": "a FIFO", "dev-zero": "a character device"}


def make_special(path: Path, kind: str) -> Path:
    """Replace ``path`` (if there) by a FIFO or a symbolic link to ``/dev/zero``."""
    if path.exists() or path.is_symlink():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    return path


def promptly(fn: Callable[[], Any], timeout: float = 10) -> Any:
    """``fn()``'s result (or its exception), failing the test if it has not returned within
    ``timeout`` seconds (a daemon thread: a call stuck on a FIFO cannot hold the suite)."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001  # handed to the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still running after {timeout} s (blocked on a special file?)"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")
