"""The ``if __name__ == "__main__":`` guard a script needs around an embedded cluster.

The embedded cluster's workers are processes started with ``spawn`` (Dask's default), and a
spawned process re-imports the main script (as ``__mp_main__``) before it runs anything. A
script that calls ``compressflow.run()`` at its top level therefore runs again in every worker:
the re-run finds the run directory locked ("in use by another compressflow run"), the worker
dies and the parent's cluster fails with "Nanny failed to start", neither saying why. Both ends
are caught here, each with the one line that says what to do:

* :func:`refuse_unguarded_start` (the parent, before the cluster starts): the main script's
  top-level line that led here is not under the guard;
* :func:`refuse_reimport` (a child, while it re-imports the main script): the check the
  parent could not make (its source unreadable) or a process started by other means.
"""

from __future__ import annotations

import ast
import multiprocessing
import os
import sys
from types import FrameType

from compressflow.errors import MainGuardError

__all__ = ["refuse_reimport", "refuse_unguarded_start", "unguarded_line"]

_MAX_SOURCE = 2_000_000  # characters: a main script larger than this is not parsed


def _message(path: str, line: int | None) -> str:
    at = f"{path}:{line}" if line else path
    return (f"{at}: this line starts compressflow's embedded cluster at the top level of the script, and the "
            f"cluster's worker processes re-import the script (multiprocessing spawn), which would start it "
            f"again in each: put the call under `if __name__ == \"__main__\":`")


def _outer_frames() -> list[FrameType]:
    frames = []
    frame = sys._getframe(1)
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back  # type: ignore[assignment]
    return frames


def _is_main_test(test: ast.expr) -> bool:
    """``__name__ == "__main__"`` (either way round)."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    return (any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides)
            and any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides))


def unguarded_line(source: str, line: int) -> bool:
    """Whether ``line`` of the module ``source`` runs at import, outside every
    ``if __name__ == "__main__":`` block (False when the source does not parse).

    >>> unguarded_line("import x\\nx.run()\\n", 2)
    True
    >>> unguarded_line("import x\\nif __name__ == '__main__':\\n    x.run()\\n", 3)
    False
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    for node in ast.walk(tree):
        if (isinstance(node, ast.If) and _is_main_test(node.test)
                and node.body[0].lineno <= line <= (node.body[-1].end_lineno or line)):
            return False
    return True


def refuse_unguarded_start() -> None:
    """Refuse to start worker processes from the main script's top level when they would
    re-import it (its call not under the ``__main__`` guard); a notebook, ``python -c``, a
    guarded script or the ``fork`` start method pass.

    Raises
    ------
    MainGuardError
        One line naming the script and line, and the guard to add (an ``InputError`` that,
        uncaught, ends the script with that line and no traceback).
    """
    import dask

    if dask.config.get("distributed.worker.multiprocessing-method", "spawn") == "fork":
        return
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not isinstance(path, str) or not os.path.isfile(path):
        return  # an interactive session, python -c, a frozen entry: spawn re-imports nothing
    for frame in _outer_frames():
        if frame.f_code.co_name == "<module>" and os.path.abspath(frame.f_code.co_filename) == os.path.abspath(path):
            try:
                with open(path, encoding="utf-8") as f:
                    source = f.read(_MAX_SOURCE + 1)
            except (OSError, UnicodeDecodeError):
                return
            if len(source) <= _MAX_SOURCE and unguarded_line(source, frame.f_lineno):
                raise MainGuardError(_message(path, frame.f_lineno))
            return


def refuse_reimport() -> None:
    """In a process that is re-importing the main script (a spawned worker's bootstrap), stop
    with the one line that says to add the guard; elsewhere do nothing.

    Raises
    ------
    MainGuardError
        The one line (a ``SystemExit`` too: the worker ends printing it, with no traceback).
    """
    frames = [f for f in _outer_frames() if f.f_code.co_name == "<module>"
              and f.f_globals.get("__name__") == "__mp_main__"]
    if frames or getattr(multiprocessing.current_process(), "_inheriting", False):
        where = frames[-1] if frames else None
        path = where.f_code.co_filename if where else "the main script"
        raise MainGuardError(_message(path, where.f_lineno if where else None))
