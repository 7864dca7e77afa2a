"""What an op function gets besides its parameters: :class:`OpContext` — where to write, which
data, which device, the task's energy meter, a way to report progress that the client and
dashboard can see, and the one training loop every op that trains uses (:meth:`OpContext.fit`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from compressflow.data import Splits, load_splits
from compressflow.nn.training import History, LossFn, cross_entropy, fit
from compressflow.ops.schedule import Schedule
from compressflow.engine.cancel import Cancelled
from compressflow.engine.events import PROGRESS, publish
from compressflow.engine.rundir import RunDir

if TYPE_CHECKING:
    from compressflow.energy import EnergyMeter

__all__ = ["OpContext"]

log = logging.getLogger("compressflow.stage")


@dataclass
class OpContext:
    """Per-task context, built by the engine for every task (:func:`compressflow.engine.execute.execute_task`).

    Parameters
    ----------
    key : str
        The task's content-hashed key (also names its artifacts).
    stage : str
        The stage name from the spec.
    data : dict
        Keyword options of :func:`compressflow.data.load_splits`.
    out : Path
        The run's output directory (shared by all workers).
    meter : EnergyMeter, optional
        The worker's energy meter, measuring this task (the engine passes it); ``None``
        (e.g. an op called by hand) leaves the per-epoch energy curve ``nan``.
    should_stop : callable, optional
        True once the task's stage was cancelled (:mod:`compressflow.engine.cancel`):
        :meth:`fit` then stops at the next epoch boundary by raising
        :class:`~compressflow.engine.cancel.Cancelled`.

    Examples
    --------
    >>> ctx = OpContext("train-0123", "teacher", {"dataset": "digits", "image_size": 8})
    >>> ctx.device.type in ("cpu", "cuda")
    True
    """

    key: str
    stage: str
    data: dict[str, Any] = field(default_factory=dict)
    out: Path = Path(".")
    meter: EnergyMeter | None = None
    should_stop: Callable[[], bool] | None = None

    def splits(self) -> Splits:
        """The pipeline's dataset (loaded once per worker process, then cached)."""
        return load_splits(**self.data)

    @property
    def device(self) -> torch.device:
        """The task's device: its GPU, else the CPU."""
        # each GPU worker sees exactly its own device (CUDA_VISIBLE_DEVICES), so index 0 is ours
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")

    def artifact_path(self, suffix: str) -> Path:
        """``<out>/artifacts/<key><suffix>``, its folder created: where the task writes an artifact."""
        return RunDir(self.out).artifact(self.key, suffix)

    def progress(self, **values: Any) -> None:
        """Report progress of a long task (e.g. per epoch) to the worker log and the
        scheduler's event log (topic ``compressflow-progress``), which the client shows."""
        text = " ".join(f"{k}={_fmt(v)}" for k, v in values.items())
        log.info("%s %s", self.stage, text)
        publish(PROGRESS, {"key": self.key, "stage": self.stage, **values})

    def check_cancelled(self) -> None:
        """Raise :class:`~compressflow.engine.cancel.Cancelled` if the task's stage was
        cancelled; ops with long loops of their own call it at their natural boundaries."""
        if self.should_stop is not None and self.should_stop():
            raise Cancelled(f"stage {self.stage!r} was cancelled")

    def fit(self, net: torch.nn.Module, schedule: Schedule, *, seed: int, loss_fn: LossFn = cross_entropy,
            splits: Splits | None = None, on_epoch: Callable[[int, History], None] | None = None,
            label: Mapping[str, Any] | None = None) -> History:
        """Train ``net`` in place on ``schedule`` (:func:`compressflow.nn.training.fit`), reporting
        :meth:`progress` after every epoch and reading the meter into the history's per-epoch
        energy curve (``energy_kwh``, cumulative kWh of the task).

        Parameters
        ----------
        net : torch.nn.Module
            The model, on :attr:`device`.
        schedule : Schedule
            Epochs, batch size, rate, warm-up, milestones, optimizer, augmentation.
        seed : int
            Seeds batch order and augmentation (the caller seeds the initialisation).
        loss_fn : callable
            ``loss_fn(logits, x, y)``; cross-entropy by default.
        splits : Splits, optional
            The data (default: :meth:`splits`), e.g. a biased subset.
        on_epoch : callable, optional
            ``on_epoch(epoch, history)`` after each epoch, before the progress report.
        label : mapping, optional
            Extra fields of every progress event (e.g. ``{"step": 2}``).

        Returns
        -------
        History
            Per-epoch loss, accuracies, rates, elapsed time and energy.
        """
        extra = dict(label or {})

        def report(epoch: int, hist: History) -> None:
            if on_epoch is not None:
                on_epoch(epoch, hist)
            energy = hist.energy_kwh[-1] if hist.energy_kwh else float("nan")
            self.progress(**extra, epoch=epoch, of=schedule.epochs, loss=hist.train_loss[-1],
                          val_accuracy=hist.val_accuracy[-1], energy_kwh=energy)
            if epoch < schedule.epochs:
                self.check_cancelled()

        return fit(net, self.splits() if splits is None else splits, seed=seed, loss_fn=loss_fn, device=self.device,
                   on_epoch=report, energy=None if self.meter is None else self.meter.energy_so_far,
                   **schedule.model_dump())


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)

