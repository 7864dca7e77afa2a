"""A worker preload of the embedded cluster (:func:`compressflow.engine.cluster.local_cluster`):
its worker processes exit promptly once their worker has closed.

A worker process that imported torch (and torchvision, sympy, ...) holds millions of objects
that Python's garbage collector traverses again and again while the interpreter shuts down
(each module it clears triggers a full collection). That took 0.5-4.5 s per worker on a loaded
2-core machine, measured with ``perf``: the process stayed alive after its worker had closed,
the nanny gave up after 4 s and killed it, and every run ended with two ``distributed.nanny -
WARNING - Worker process still alive after 4.0 seconds, killing`` lines. Freezing the objects
at exit (:func:`gc.freeze`, run by :mod:`atexit` before the shutdown's collections) leaves the
collector only what is created after; memory is returned to the system with the process anyway.
"""

from __future__ import annotations

import atexit
import gc
from typing import Any

__all__ = ["dask_setup"]


def dask_setup(worker: Any) -> None:
    """Freeze the garbage collector's objects when this worker process exits (Dask calls this
    when the worker starts)."""
    atexit.register(gc.freeze)
