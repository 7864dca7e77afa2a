"""Stopping a run whose workers keep dying: :class:`WorkerWatchdog` follows the scheduler's
worker events and closes the client when its thresholds (``WATCHDOG``) trip."""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from typing import TYPE_CHECKING, Any

from dask.utils import format_bytes

from compressflow.engine.cluster_options import MIN_MEMORY_LIMIT
from compressflow.errors import InputError

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["WATCHDOG", "WorkerWatchdog", "WorkersDyingError"]

#: When a run stops because its workers keep dying (see :class:`WorkerWatchdog`): more than
#: ``deaths`` unexpected worker deaths (or as many as the most workers seen, if more) within
#: ``window_s`` seconds, or, on a cluster this process started on this machine, no worker
#: alive for ``no_worker_s`` seconds (a worker that dies while it starts, e.g. above its
#: memory limit, is restarted by its nanny forever without the scheduler ever seeing it).
WATCHDOG: dict[str, float] = {"deaths": 10, "window_s": 120.0, "no_worker_s": 60.0}


# ---------------------------------------------------------------------------------------
# Stopping a run whose workers keep dying
# ---------------------------------------------------------------------------------------

class WorkersDyingError(InputError):
    """The cluster's workers keep dying (e.g. a memory limit below what a worker needs)."""


class WorkerWatchdog:
    """Watch a client's workers; when they keep dying, close the client so the run stops.

    Dask retries a task whose worker died and marks it ``KilledWorker`` after
    ``distributed.scheduler.allowed-failures`` deaths, but a worker that dies *before* it
    runs a task (killed at start above its memory limit, a crashing plugin) is restarted by
    its nanny forever and the run waits forever. The watchdog follows the scheduler's
    ``add-worker``/``remove-worker`` events and trips on more than ``deaths`` unexpected
    deaths in ``window_s`` seconds (or as many as the most workers seen, if more), or on no
    worker alive for ``no_worker_s`` seconds (``None``: never, for clusters whose workers may
    legitimately come later, such as queued batch jobs or an existing scheduler).

    Parameters
    ----------
    client : distributed.Client
    deaths, window_s, no_worker_s : float, optional
        Thresholds; default ``WATCHDOG``.
    poll_s : float
        How often the thresholds are checked.
    """

    def __init__(self, client: Client, *, deaths: float | None = None, window_s: float | None = None,
                 no_worker_s: float | None = None, poll_s: float = 0.5):
        self._client = client
        self._deaths = WATCHDOG["deaths"] if deaths is None else deaths
        self._window = WATCHDOG["window_s"] if window_s is None else window_s
        self._no_worker = no_worker_s
        self._poll = poll_s
        self._lock = threading.Lock()
        self._alive: set[str] = set()
        self._peak = 0
        self._died: collections.deque[float] = collections.deque()
        self._empty_since: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="compressflow-watchdog", daemon=True)
        self.reason: str | None = None

    def __enter__(self) -> WorkerWatchdog:
        self._client.subscribe_topic("all", self._on_event)
        with self._lock:
            self._alive = set(self._client.scheduler_info(n_workers=-1)["workers"])
            self._peak = len(self._alive)
            self._empty_since = None if self._alive else time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(Exception):  # the client may be closed (tripped) or closing
            if self._client.status == "running":
                self._client.unsubscribe_topic("all")

    def _on_event(self, event: tuple[float, dict]) -> None:
        _, msg = event
        action, worker = msg.get("action"), msg.get("worker")
        if worker is None or action not in ("add-worker", "remove-worker"):
            return
        now = time.monotonic()
        with self._lock:
            if action == "add-worker":
                self._alive.add(worker)
                self._peak = max(self._peak, len(self._alive))
                self._empty_since = None
                return
            self._alive.discard(worker)
            if not msg.get("expected"):
                self._died.append(now)
            if not self._alive and self._empty_since is None:
                self._empty_since = now

    def verdict(self, now: float | None = None) -> str | None:
        """Why the run should stop now, or None."""
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._died and self._died[0] < now - self._window:
                self._died.popleft()
            limit = max(self._deaths, self._peak)
            if len(self._died) > limit:
                return (f"{len(self._died)} workers died within {self._window:g} s (more than {limit:g}) "
                        f"without finishing their tasks")
            if self._no_worker is not None and self._empty_since is not None \
                    and now - self._empty_since >= self._no_worker:
                return f"no worker has been alive for {now - self._empty_since:.0f} s"
        return None

    def _watch(self) -> None:
        while not self._stop.wait(self._poll):
            reason = self.verdict()
            if reason is not None:
                self.reason = reason
                with contextlib.suppress(Exception):
                    self._client.unsubscribe_topic("all")  # else the scheduler logs a closed comm
                with contextlib.suppress(Exception):
                    self._client.close(timeout=10)  # wakes the run: its futures are cancelled
                return

    def raise_if_tripped(self) -> None:
        """Raise :class:`WorkersDyingError` (one line) if the watchdog stopped the run."""
        if self.reason is not None:
            raise WorkersDyingError(
                f"cluster: stopped the run because its workers keep dying: {self.reason}; a worker "
                f"above its memory_limit is restarted at once (at least {format_bytes(MIN_MEMORY_LIMIT)} per "
                f"worker), and the workers' logs say why they died. Finished tasks are kept in the run "
                f"directory's records/ and reused when you run again")
