"""The events a study's tasks and client publish through the scheduler's event log — one
source for the progress handle (:class:`compressflow.engine.study.Study`), the dashboard page
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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from compressflow.engine.records import LedgerEntry

__all__ = ["PROGRESS", "STUDY", "TASK", "publish", "task_summary"]

STUDY = "compressflow-study"
TASK = "compressflow-task"
PROGRESS = "compressflow-progress"


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
