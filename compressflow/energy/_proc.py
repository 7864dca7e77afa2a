"""A cheap, exact "children of this process" for CodeCarbon's process-mode tracker.

CodeCarbon (3.3.x) counts the CPU time and memory of the tracked process *and its
descendants*, which it finds with ``psutil.Process.children(recursive=True)``. On Linux psutil
answers that by reading ``/proc/<pid>/stat`` of every process on the machine, three times per
task window (CPU at start and stop, RAM at stop): about 3 ms per window on an idle machine,
30+ ms on a loaded one with a hundred processes — most of what a short task costs. The
kernel already keeps each thread's children in ``/proc/<pid>/task/<tid>/children``
(``CONFIG_PROC_CHILDREN``, on in mainstream kernels); reading those gives the same set of
processes in a few small reads. Where that file does not exist (other kernels, other
systems) nothing is changed and CodeCarbon scans as before.
"""

from __future__ import annotations

import os
from typing import Any

import psutil

__all__ = ["descendants", "use_proc_children"]


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
    cpu, ram = hardware.get("CPU"), hardware.get("RAM")
    pid = getattr(getattr(cpu, "_process", None), "pid", None)
    if pid is None or not hasattr(ram, "_get_children_memories") or not _children_files_exist(pid):
        return False
    cpu._process = _Process(pid)
    ram_pid = getattr(ram, "_pid", pid)
    ram._get_children_memories = lambda: _rss_of_descendants(ram_pid)
    return True
