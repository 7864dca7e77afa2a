"""Cancelling a stage of a submitted study: the client registers a :class:`CancelPlugin` (a
Dask worker plugin, so workers that join later learn it too) that marks ``(study, stage)``
cancelled in every worker process; a task of that stage that has not started returns
``cancelled`` at once, and a running one stops at its next epoch boundary
(:meth:`compressflow.ops.OpContext.check_cancelled`, through :func:`stop_check`) with its
energy and its checkpoint kept. Checking is a set lookup in the worker's memory: no message
per epoch."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from distributed.diagnostics.plugin import WorkerPlugin

from compressflow.ops import Cancelled

__all__ = ["CancelPlugin", "Cancelled", "is_cancelled", "stop_check", "worker_retiring"]

_CANCELLED: set[tuple[str, str]] = set()


def is_cancelled(study: str, stage: str) -> bool:
    """Whether ``stage`` of submission ``study`` was cancelled (in this worker process)."""
    return bool(study) and (study, stage) in _CANCELLED


def worker_retiring() -> bool:
    """Whether this task's worker is closing (e.g. its ``--lifetime`` before a SLURM walltime):
    a training task then hands itself back at its epoch boundary (``distributed.Reschedule``)
    and another worker resumes it from the state just saved, instead of this worker racing on
    to the end while the scheduler already runs it elsewhere."""
    try:
        from distributed import get_worker
        from distributed.core import Status

        return get_worker().status in (Status.closing_gracefully, Status.closing, Status.closed)
    except ValueError:  # not on a Dask worker
        return False


def stop_check(study: str, stage: str) -> Callable[[], None]:
    """The :class:`~compressflow.ops.OpContext`'s ``stop_check`` for a task of ``stage``:
    raises :class:`~compressflow.ops.Cancelled` once the stage was cancelled, or
    ``distributed.Reschedule`` when the worker is closing (another worker resumes the task
    from the state saved at this epoch)."""

    def check() -> None:
        if is_cancelled(study, stage):
            raise Cancelled(f"stage {stage!r} was cancelled")
        if worker_retiring():
            from distributed import Reschedule

            raise Reschedule()

    return check


class CancelPlugin(WorkerPlugin):
    """Marks ``stages`` of ``study`` cancelled on every worker, present and future."""

    def __init__(self, study: str, stages: Iterable[str]) -> None:
        self.study = study
        self.stages = tuple(stages)

    def setup(self, worker) -> None:
        _CANCELLED.update((self.study, s) for s in self.stages)

    def teardown(self, worker) -> None:
        # a plugin replaced by a later cancel of the same study (a superset) is torn down first
        _CANCELLED.difference_update((self.study, s) for s in self.stages)
