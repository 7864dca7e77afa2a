"""What an op function gets besides its parameters: :class:`OpContext` — where to write, which
data, which device, the task's energy meter, a way to report progress that the client and
dashboard can see, a way to learn it should stop, and the one training loop every op that
trains uses (:meth:`OpContext.fit`), which keeps a resumable state of each of the task's fits
(every ``checkpoint_every`` epochs and before a cancel), so a retried, resumed or restarted
task continues after its last saved epoch instead of training again from the start.

The engine builds one per task and hands it what only the engine knows (how to publish an
event, how to tell a cancelled stage or a retiring worker); this module imports no engine
module, and torch only when a method needs it."""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compressflow.ops.schedule import Schedule
from compressflow.rundir import RunDir
from compressflow.rundir.files import atomic_write_bytes

if TYPE_CHECKING:
    import torch

    from compressflow.data import DetectionSplits, Splits
    from compressflow.energy import EnergyMeter
    from compressflow.nn.training import History, LossFn, Stateful

__all__ = ["Cancelled", "OpContext"]

log = logging.getLogger("compressflow.stage")


class Cancelled(Exception):
    """Raised inside a task whose stage was cancelled (by :meth:`OpContext.check_cancelled`);
    the engine records the task ``cancelled``, keeping its energy and training state."""


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
    stop_check : callable, optional
        Called at every epoch boundary (:meth:`check_cancelled`): the engine's raises
        :class:`Cancelled` once the task's stage was cancelled, or hands the task back to the
        scheduler when its worker is closing. None: the task never stops early.
    publish : callable, optional
        ``publish(event)`` sends a progress event to the client and the dashboard (the engine
        passes the scheduler's event log); None: progress is only logged.
    checkpoint_every : int, optional
        Epochs between the resumable states :meth:`fit` writes; 0 or None: none written or
        read. The engine passes the spec's setting (:meth:`~compressflow.spec.PipelineSpec.checkpoint_every_of`);
        an op called by hand leaves no state files behind and never resumes a stale one.
    budget : int, optional
        Stop every :meth:`fit` after this epoch of its schedule (a search's rung,
        :mod:`compressflow.engine.search`): the schedule (rate decay, warm-up) stays that of
        the full run, the state is saved, and the op goes on to evaluate the model as trained
        so far. A later task with a larger budget and the same ``state_key`` resumes it.
    state_key : str
        Names the resumable state files (default: ``key``); the rungs of one trial share it.

    Attributes
    ----------
    resumed_from_epoch : int
        Epochs restored from saved states instead of trained, summed over the task's fits.

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
    stop_check: Callable[[], None] | None = None
    publish: Callable[[dict[str, Any]], None] | None = None
    checkpoint_every: int | None = None
    budget: int | None = None
    state_key: str = ""
    resumed_from_epoch: int = field(default=0, init=False)
    _fits: int = field(default=0, init=False, repr=False)  # fit() calls so far: names each one's state file
    _energy_before: float = field(default=0.0, init=False, repr=False)  # kWh of earlier attempts (restored states)

    def splits(self) -> Splits:
        """The pipeline's classification dataset (loaded once per worker process, then cached)."""
        from compressflow.data import load_splits

        return load_splits(**self.data)

    def detection_splits(self) -> DetectionSplits:
        """The pipeline's detection dataset (ops registered with ``data="detection"``)."""
        from compressflow.data import load_detection_splits

        return load_detection_splits(**self.data)

    @property
    def device(self) -> torch.device:
        """The task's device: its GPU, else the CPU."""
        import torch

        # each GPU worker sees exactly its own device (CUDA_VISIBLE_DEVICES), so index 0 is ours
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")

    def artifact_path(self, suffix: str) -> Path:
        """``<out>/artifacts/<key><suffix>``, its folder created: where the task writes an artifact."""
        return RunDir(self.out).artifact(self.key, suffix)

    def progress(self, **values: Any) -> None:
        """Report progress of a long task (e.g. per epoch) to the worker log and, through the
        engine, to the scheduler's event log (topic ``compressflow-progress``), which the
        client and the dashboard show."""
        text = " ".join(f"{k}={_fmt(v)}" for k, v in values.items())
        log.info("%s %s", self.stage, text)
        if self.publish is not None:
            self.publish({"key": self.key, "stage": self.stage, **values})

    def check_cancelled(self) -> None:
        """Stop here if the task should: raises :class:`Cancelled` when its stage was
        cancelled, or hands the task back (``distributed.Reschedule``) when its worker is
        closing (another worker resumes it from this epoch's state). Ops with long loops of
        their own call it at their natural boundaries; :meth:`fit` calls it every epoch."""
        if self.stop_check is not None:
            self.stop_check()

    def fit(self, net: torch.nn.Module, schedule: Schedule, *, seed: int, loss_fn: LossFn | None = None,
            splits: Splits | None = None, on_epoch: Callable[[int, History], None] | None = None,
            label: Mapping[str, Any] | None = None, stateful: Sequence[Stateful] = ()) -> History:
        """Train ``net`` in place on ``schedule`` (:func:`compressflow.nn.training.fit`), reporting
        :meth:`progress` after every epoch and reading the meter into the history's per-epoch
        energy curve (``energy_kwh``, cumulative kWh of the task).

        With :attr:`checkpoint_every` > 0 the n-th fit of the task keeps its resumable state
        (:meth:`compressflow.rundir.RunDir.training_state`; written atomically every
        ``checkpoint_every`` epochs, after the last and before a cancel) and starts from it
        when it exists: a finished state restores ``net`` and returns at once, an unfinished
        one continues after its epoch. A state that does not match (another schedule, seed,
        data size or model) or cannot be read is ignored with a warning.

        Parameters
        ----------
        net : torch.nn.Module
            The model, on :attr:`device`.
        schedule : Schedule
            Epochs, batch size, rate, warm-up, milestones, optimizer, augmentation.
        seed : int
            Seeds batch order and augmentation (the caller seeds the initialisation).
        loss_fn : callable, optional
            ``loss_fn(logits, x, y)``; cross-entropy by default.
        splits : Splits, optional
            The data (default: :meth:`splits`), e.g. a biased subset.
        on_epoch : callable, optional
            ``on_epoch(epoch, history)`` after each epoch, before the progress report.
        label : mapping, optional
            Extra fields of every progress event (e.g. ``{"step": 2}``).
        stateful : sequence, optional
            The loss's own state (``state_dict``/``load_state_dict``, e.g. a stochastic
            temperature's random stream), saved and restored with the model.

        Returns
        -------
        History
            Per-epoch loss, accuracies, rates, elapsed time and energy.
        """
        import torch

        from compressflow.nn.training import ResumeMismatch, cross_entropy, fit

        extra = dict(label or {})
        every = self.checkpoint_every or 0
        path = RunDir(self.out).training_state(self.state_key or self.key, self._fits) if every > 0 else None
        self._fits += 1

        def report(epoch: int, hist: History) -> None:
            if on_epoch is not None:
                on_epoch(epoch, hist)
            energy = hist.energy_kwh[-1] if hist.energy_kwh else float("nan")
            self.progress(**extra, epoch=epoch, of=schedule.epochs, loss=hist.train_loss[-1],
                          val_accuracy=hist.val_accuracy[-1], energy_kwh=energy)
            if epoch < schedule.epochs and (self.budget is None or epoch < self.budget):
                self.check_cancelled()  # fit saves this epoch's state before the exception leaves it

        def save(state: dict[str, Any]) -> None:
            assert path is not None
            buffer = io.BytesIO()
            torch.save(state, buffer)
            try:
                atomic_write_bytes(path, buffer.getvalue())
            except OSError as exc:  # a state only saves time later: a full disk must not stop the training
                log.warning("%s: training state %s not written (%s); the task goes on", self.stage, path, exc)

        data = self.splits() if splits is None else splits
        resume = _read_state(path) if path is not None else None
        meter = self.meter

        def train(state: Mapping[str, Any] | None) -> History:
            # a resumed fit continues its saved curve; a fresh one starts from what restored fits cost
            before = 0.0 if state is not None else self._energy_before
            energy: Callable[[], float] | None = None
            if meter is not None:
                read = meter.energy_so_far
                energy = lambda: before + read()  # noqa: E731
            return fit(net, data, seed=seed, loss_fn=loss_fn or cross_entropy, device=self.device, on_epoch=report,
                       energy=energy, resume=state, checkpoint=None if path is None else save,
                       checkpoint_every=max(1, every), stateful=stateful, stop_after=self.budget,
                       **schedule.model_dump())

        if resume is not None:
            try:
                hist = train(resume)
            except ResumeMismatch as exc:
                log.warning("%s: training state %s is not resumed (%s); training from the start", self.stage, path, exc)
            else:
                self.resumed_from_epoch += int(resume["epoch"])
                saved = resume["energy_kwh"]
                if isinstance(saved, float) and math.isfinite(saved):
                    self._energy_before = max(self._energy_before, saved)
                return hist
        return train(None)


def _read_state(path: Path) -> dict[str, Any] | None:
    """The state saved at ``path``, or None (none, or unreadable: logged). Loaded with
    ``weights_only``: tensors and plain values only, never arbitrary pickled objects."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        return None
    except Exception as exc:  # torn, edited or from another version: training starts afresh
        log.warning("training state %s cannot be read (%s: %s); training from the start", path,
                    type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        return None
    if not isinstance(state, dict):
        log.warning("training state %s is not a mapping; training from the start", path)
        return None
    return state


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
