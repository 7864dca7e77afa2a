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
    ``study``, ``key``, ``stage``, ``epoch``, ``of``, ``loss``, ``val_accuracy``, ``energy_kwh``
    (cumulative kWh of the task so far), plus the op's own fields.

``key`` is the task key (:func:`compressflow.engine.keys.task_key`), the same in every study
that asks for the same work; ``study`` tells whose task it is (each submission runs its own,
:func:`compressflow.engine.node.dask_key`). Studies sharing a client follow the task and
progress topics through :func:`follow`, which hands each event to the study it names.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
import time
import weakref
from collections.abc import Callable, Container, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from compressflow.rundir.records import LedgerEntry

__all__ = ["PROGRESS", "STUDY", "TASK", "RunningTasks", "follow", "publish", "task_summary"]

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
        if msg.get("study") != self.study:
            return
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


_Handler = Callable[[tuple[float, Any]], None]
_FOLLOWED: weakref.WeakKeyDictionary[Any, dict[str, dict[str, _Handler]]] = weakref.WeakKeyDictionary()
_FOLLOWED_LOCK = threading.Lock()


def follow(client: Any, study: str, handlers: Mapping[str, _Handler]) -> Callable[[], None]:
    """Call ``handlers[topic]`` with every event ``(time, message)`` of ``topic`` whose message
    names submission ``study``, until the returned function is called.

    A ``distributed.Client`` keeps one handler per topic (a second ``subscribe_topic`` replaces
    the first, and one ``unsubscribe_topic`` ends it for everybody), so the studies sharing a
    client share one subscription per topic here, which hands each event to the study it
    names; the last study to stop following a topic unsubscribes the client from it.

    Parameters
    ----------
    client : distributed.Client
    study : str
        The submission's id (the ``study`` field of its events).
    handlers : mapping
        Topic -> handler.

    Returns
    -------
    callable
        Stops following (a closed client is fine).
    """
    with _FOLLOWED_LOCK:
        topics = _FOLLOWED.setdefault(client, {})
        for topic, handler in handlers.items():
            studies = topics.setdefault(topic, {})
            if not studies:
                client.subscribe_topic(topic, functools.partial(_hand_over, studies))
            studies[study] = handler

    def stop() -> None:
        with _FOLLOWED_LOCK:
            for topic in handlers:
                studies = topics.get(topic, {})
                studies.pop(study, None)
                if not studies and topics.pop(topic, None) is not None:
                    with contextlib.suppress(Exception):  # a closed client has no subscriptions left
                        client.unsubscribe_topic(topic)

    return stop


def _hand_over(studies: dict[str, _Handler], event: tuple[float, Any]) -> None:
    msg = event[1]
    handler = studies.get(msg.get("study", "")) if isinstance(msg, dict) else None
    if handler is not None:
        handler(event)


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
