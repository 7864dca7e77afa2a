"""The events a study's tasks and client publish through the scheduler's event log — one
source for the progress handle (:class:`compressflow.api.study.Study`), the dashboard page
(:mod:`compressflow.dashboard`) and the CLI's progress lines.

Topics (``distributed`` event topics; each message is a small JSON-able ``dict``):

``compressflow-study`` (from the client, once per submission)
    ``study`` (id), ``name``, ``out``, ``stages`` (stage → its task keys, in order),
    ``reused`` (key → :func:`task_summary` of a record reused from an earlier run),
    ``intensity_g_per_kwh`` and ``pue`` (gCO₂ = kWh × pue × intensity).
``compressflow-task`` (from a worker, when a task starts and when it ends)
    ``study``, ``key``, ``stage``, ``op``, ``event`` (``start`` | ``end``), ``worker``, and at
    the end ``status``, ``duration_s``, ``energy_kwh``, ``accuracy``, ``val_accuracy``,
    ``resumed_from_epoch``.
``compressflow-progress`` (from a worker, after every epoch of a task that trains)
    ``key``, ``stage``, ``epoch``, ``of``, ``loss``, ``val_accuracy``, ``energy_kwh``
    (cumulative kWh of the task so far), plus the op's own fields.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Container
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from compressflow.rundir.records import LedgerEntry

__all__ = ["PROGRESS", "STUDY", "TASK", "RunningTasks", "publish", "task_summary"]

STUDY = "compressflow-study"
TASK = "compressflow-task"
PROGRESS = "compressflow-progress"


class RunningTasks:
    """The running tasks of one submission and each one's latest progress (stage, worker, start,
    epoch, energy, ...), kept from its ``compressflow-task`` and ``compressflow-progress`` events.
    Thread-safe: the client's event handlers update it while its user reads it."""

    def __init__(self, study: str) -> None:
        self.study = study
        self._lock = threading.Lock()
        self._tasks: dict[str, dict[str, Any]] = {}

    def on_task(self, msg: dict[str, Any], finished: Container[str]) -> None:
        """A task event: a start (of a task not ``finished`` yet) adds it, an end drops it."""
        if msg.get("study") != self.study:
            return
        with self._lock:
            if msg.get("event") == "start" and msg["key"] not in finished:
                self._tasks[msg["key"]] = {"stage": msg.get("stage"), "worker": msg.get("worker"),
                                           "started": time.time()}
            elif msg.get("event") == "end":
                self._tasks.pop(msg["key"], None)

    def on_progress(self, msg: dict[str, Any]) -> None:
        """A progress event of a running task: its latest fields."""
        with self._lock:
            if msg.get("key") in self._tasks:
                self._tasks[msg["key"]].update(msg)

    def ended(self, key: str) -> None:
        with self._lock:
            self._tasks.pop(key, None)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Key → a copy of the task's latest progress."""
        with self._lock:
            return {k: dict(v) for k, v in self._tasks.items()}


def publish(topic: str, message: dict[str, Any]) -> None:
    """Log ``message`` under ``topic`` from inside a task (the worker batches it to the
    scheduler: no round trip); nothing outside a Dask worker."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return  # not on a Dask worker (an op called by hand, a test)
    worker.log_event(topic, message)


def task_summary(task: LedgerEntry) -> dict[str, Any]:
    """The end-of-task fields of a ``compressflow-task`` event for ``task``: status, duration,
    energy and its scalar accuracies (``nan`` where the op records none)."""
    metrics = task.record.metrics if task.record is not None else None

    def scalar(name: str) -> float:
        if metrics is None or name not in metrics or metrics[name].ndim:
            return math.nan
        return float(metrics[name])

    return {
        "status": task.status, "duration_s": float(task.duration_s), "worker": task.worker,
        "energy_kwh": float(task.energy.get("energy_kwh", math.nan)),
        "accuracy": scalar("accuracy"), "val_accuracy": scalar("val_accuracy"),
        "resumed_from_epoch": int(getattr(task, "resumed_from_epoch", 0)),
    }
