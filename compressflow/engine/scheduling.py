"""Task-to-worker assignment for independent tasks of known or estimated duration.

Blockwise distillation runs one task per replaced layer, and per-layer times are uneven
(VGG16's first layers take ~3.5x its last), so placement matters (ALGORITHMS.md §3):
``work_stealing`` leaves placement to Dask's scheduler, which steals work dynamically;
``round_robin`` sends the i-th task to worker ``i % n``; ``bin_packing`` is worst-fit
decreasing (sort descending, put each on the least-loaded worker) via ``binpacking``.
"""

from __future__ import annotations

from collections.abc import Iterable

import binpacking

from compressflow.errors import InputError, did_you_mean
from compressflow.rundir.records import LedgerEntry

__all__ = ["POLICIES", "assign", "durations_of", "lower_bound", "makespan"]

POLICIES = ("work_stealing", "round_robin", "bin_packing")


def assign(policy: str, durations: dict[str, float], workers: list[str]) -> dict[str, str] | None:
    """Assign each task to a worker.

    Parameters
    ----------
    policy : {"work_stealing", "round_robin", "bin_packing"}
    durations : dict of str to float
        Task key -> (known or estimated) duration; the dict order is the task order.
    workers : list of str
        Worker addresses.

    Returns
    -------
    dict of str to str or None
        Task key -> worker, each task exactly once; ``None`` for ``work_stealing`` (submit unrestricted).

    Raises
    ------
    InputError
        Unknown policy, no workers, or a negative duration.

    Examples
    --------
    >>> assign("round_robin", {"a": 3, "b": 2, "c": 1}, ["w0", "w1"])
    {'a': 'w0', 'b': 'w1', 'c': 'w0'}
    >>> assign("bin_packing", {"a": 3, "b": 2, "c": 1}, ["w0", "w1"])
    {'a': 'w0', 'b': 'w1', 'c': 'w1'}
    """
    if policy not in POLICIES:
        raise InputError(f"scheduling.policy: unknown policy {policy!r}{did_you_mean(policy, POLICIES)}; "
                         f"valid choices: {', '.join(POLICIES)}")
    if policy == "work_stealing":
        return None
    if not workers:
        raise InputError("scheduling.workers: no workers to assign tasks to; start at least one worker")
    if any(d < 0 for d in durations.values()):
        raise InputError(f"scheduling.durations: negative durations in {durations}; durations must be >= 0")
    if policy == "round_robin":
        return {key: workers[i % len(workers)] for i, key in enumerate(durations)}
    bins = binpacking.to_constant_bin_number(dict(durations), len(workers)) if durations else []
    placed = {key: worker for worker, b in zip(workers, bins) for key in b}
    return {key: placed[key] for key in durations}  # keep the caller's task order


def makespan(assignment: dict[str, str], durations: dict[str, float]) -> float:
    """Finish time of the busiest worker: max over workers of its summed task durations.

    Examples
    --------
    >>> makespan({"a": "w0", "b": "w1", "c": "w1"}, {"a": 3, "b": 2, "c": 1})
    3.0
    """
    load: dict[str, float] = {}
    for key, worker in assignment.items():
        load[worker] = load.get(worker, 0.0) + float(durations[key])
    return max(load.values(), default=0.0)


def lower_bound(durations: dict[str, float], n_workers: int) -> float:
    """No schedule of these tasks on ``n_workers`` can finish sooner: max(total / n, longest).

    Examples
    --------
    >>> lower_bound({"a": 8, "b": 1, "c": 1}, 2)
    8.0
    """
    if n_workers < 1:
        raise InputError(f"scheduling.n_workers: got {n_workers!r}; need at least 1 worker")
    values = [float(d) for d in durations.values()]
    return max(sum(values) / n_workers, max(values, default=0.0))


def durations_of(tasks: Iterable[LedgerEntry], stage: str, key_by: str) -> dict[str, float]:
    """Known task durations from an earlier run's finished tasks.

    Parameters
    ----------
    tasks : iterable of LedgerEntry
        The earlier run's ledger entries (:meth:`compressflow.rundir.RunDir.finished`).
    stage : str
        Stage whose tasks to read, e.g. ``"blockwise"``.
    key_by : str
        Sweep axis whose value names the task, e.g. ``"layer"``.

    Returns
    -------
    dict of str to float
        ``str(point[key_by])`` -> duration (s) for the stage's tasks with status ``ok``
        (failed tasks and tasks whose point lacks ``key_by`` are skipped).

    Raises
    ------
    InputError
        If no task of ``stage`` is among them.

    Examples
    --------
    >>> from compressflow.rundir.records import LedgerEntry
    >>> done = [LedgerEntry("a", "w", "wait", {"seconds": 1}, status="ok", start=0.0, end=1.5)]
    >>> durations_of(done, "w", "seconds")
    {'1': 1.5}
    """
    tasks = list(tasks)
    stages = {t.stage for t in tasks}
    if stage not in stages:
        raise InputError(f"scheduling.stage: {stage!r} is not among the earlier run's tasks; stages there: "
                         f"{sorted(stages)}")
    return {str(t.point[key_by]): float(t.duration_s) for t in tasks
            if t.stage == stage and t.ok and key_by in t.point}
