"""A worker preload of the embedded cluster (:func:`compressflow.engine.cluster.local_cluster`):
its worker processes leave SIGINT and SIGTERM to the process that started them.

A terminal's Ctrl-C, ``timeout``, systemd and SLURM signal the whole process group (or cgroup),
so the embedded cluster's worker processes receive the same SIGINT or SIGTERM as ``compressflow
run``. Left to Python's defaults they die at once (a ``KeyboardInterrupt`` traceback, or a
silent exit that the nanny answers by restarting them), and the running tasks cannot reach the
epoch boundary that the client's first Ctrl-C waits for. Ignoring both signals here leaves one
process in charge: the client cancels, waits its grace period and closes the cluster, whose
nanny stops each worker through its queue (and kills one that does not stop). A worker whose
client process died still stops: its nanny's queue closes with it.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

__all__ = ["IGNORED", "dask_setup"]

#: the signals a worker process of the embedded cluster leaves to its client process
IGNORED = (signal.SIGINT, signal.SIGTERM)


def dask_setup(worker: Any) -> None:
    """Ignore :data:`IGNORED` in this worker process (Dask calls this when the worker starts)."""
    if threading.current_thread() is threading.main_thread():  # only there can a handler be set
        for sig in IGNORED:
            signal.signal(sig, signal.SIG_IGN)
