"""Two costs CodeCarbon (3.3.x) pays per task window, made cheap without changing what it
measures; :func:`speed_up` applies both to one tracker (the meter's).

1. Children of this process. CodeCarbon (3.3.x) counts the CPU time and memory of the tracked process *and its
descendants*, which it finds with ``psutil.Process.children(recursive=True)``. On Linux psutil
answers that by reading ``/proc/<pid>/stat`` of every process on the machine, three times per
task window (CPU at start and stop, RAM at stop): about 3 ms per window on an idle machine,
30+ ms on a loaded one with a hundred processes — most of what a short task costs. The
kernel already keeps each thread's children in ``/proc/<pid>/task/<tid>/children``
(``CONFIG_PROC_CHILDREN``, on in mainstream kernels); reading those gives the same set of
processes in a few small reads. Where that file does not exist (other kernels, other
systems) nothing is changed and CodeCarbon scans as before.

2. Its 1 s power sampler. ``start_task`` starts a ``threading.Timer`` thread and ``stop_task``
   cancels it: one new thread per window (0.1 ms idle, 5-10 ms on a loaded machine, where the
   new thread waits for a time slice). :class:`ReusedThreadScheduler` keeps CodeCarbon's
   ``PeriodicScheduler`` interface and timing (first call ``interval`` after ``start``, then
   every ``interval`` until ``stop``) on one thread that waits between windows and ends after
   :data:`IDLE_EXIT_S` without one.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

__all__ = ["ReusedThreadScheduler", "descendants", "speed_up", "use_proc_children"]

log = logging.getLogger(__name__)

#: seconds a sampler thread waits for the next window before it ends (a new one starts with it)
IDLE_EXIT_S = 30.0


def _children_files_exist(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}/task/{pid}/children")


def _direct_children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:  # the process ended
        return kids
    for tid in threads:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as fh:
                kids += [int(p) for p in fh.read().split()]
        except (OSError, ValueError):  # the thread ended
            continue
    return kids


def descendants(pid: int) -> list[int]:
    """Pids of every descendant of ``pid`` (children, their children, ...), from the kernel's
    per-thread ``children`` lists. A process that ends meanwhile is simply left out (as psutil
    does)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        kids = _direct_children(todo.pop())
        found += kids
        todo += kids
    return found


class _Process(psutil.Process):
    """``psutil.Process`` whose ``children`` reads the kernel's children lists."""

    def children(self, recursive: bool = False) -> list[psutil.Process]:
        pids = descendants(self.pid) if recursive else _direct_children(self.pid)
        procs = []
        for pid in pids:
            try:
                procs.append(psutil.Process(pid))
            except psutil.Error:  # ended since it was listed
                pass
        return procs


def _rss_of_descendants(pid: int) -> list[int]:
    sizes = []
    for child in descendants(pid):
        try:
            sizes.append(psutil.Process(child).memory_info().rss)
        except psutil.Error:
            pass
    return sizes


def use_proc_children(hardware: dict[str, Any]) -> bool:
    """Point the tracker's ``CPU`` and ``RAM`` objects (by class name) at :func:`descendants`
    instead of psutil's machine-wide scan; return whether it was done (False where the kernel
    has no children lists, or the objects lack what is replaced)."""
    cpu: Any = hardware.get("CPU")
    ram: Any = hardware.get("RAM")
    pid = getattr(getattr(cpu, "_process", None), "pid", None)
    if pid is None or not hasattr(ram, "_get_children_memories") or not _children_files_exist(pid):
        return False
    cpu._process = _Process(pid)
    ram_pid = getattr(ram, "_pid", pid)
    ram._get_children_memories = lambda: _rss_of_descendants(ram_pid)
    return True


class ReusedThreadScheduler:
    """CodeCarbon's ``PeriodicScheduler`` (``start``, ``stop``, ``_stopped``) on one reused thread:
    ``function()`` runs ``interval`` seconds after :meth:`start`, then every ``interval``
    seconds, until :meth:`stop`."""

    def __init__(self, interval: float, function: Callable[[], Any]) -> None:
        self.interval, self.function = interval, function
        self._stopped = True
        self._due = 0.0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def start(self, from_run: bool = False) -> None:
        with self._cond:
            if not self._stopped:
                return
            self._stopped = False
            self._due = time.monotonic() + self.interval
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="codecarbon-sampler", daemon=True)
                self._thread.start()
            # no notify: waking the thread at every window boundary costs a thread switch; it
            # looks again at least every interval, and the due time was set above

    def stop(self) -> None:
        with self._cond:
            self._stopped = True

    def _loop(self) -> None:
        idle_since = None
        with self._cond:
            while True:
                if self._stopped:
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since > IDLE_EXIT_S:
                        self._thread = None  # under the lock: the next start() sees it and starts one
                        return
                    self._cond.wait(timeout=self.interval / 2)
                    continue
                idle_since = None
                delay = self._due - time.monotonic()
                if delay > 0:
                    self._cond.wait(timeout=delay)
                    continue
                self._due = time.monotonic() + self.interval  # as the Timer it replaces: from this run
                self._cond.release()
                try:
                    self.function()
                except Exception as exc:  # a failed sample must not end the sampler
                    log.warning("CodeCarbon power sample failed: %s", exc)
                finally:
                    self._cond.acquire()


def speed_up(tracker: Any) -> None:
    """Apply both speed-ups to a started ``OfflineEmissionsTracker``; each is skipped where the
    tracker lacks what it replaces (another CodeCarbon release), leaving CodeCarbon's own."""
    use_proc_children({type(hw).__name__: hw for hw in getattr(tracker, "_hardware", None) or []})
    sampler: Any = getattr(tracker, "_scheduler_monitor_power", None)
    interval, function = getattr(sampler, "interval", None), getattr(sampler, "function", None)
    if type(sampler).__name__ == "PeriodicScheduler" and sampler._stopped and interval and callable(function):
        tracker._scheduler_monitor_power = ReusedThreadScheduler(interval, function)
