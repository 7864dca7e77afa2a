"""What a stage function gets besides its parameters: where to write, which data, which
device, and a way to report progress that the client and dashboard can see."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from compressflow.data import Splits, load_splits
from compressflow.engine.rundir import RunDir

__all__ = ["StageContext"]

log = logging.getLogger("compressflow.stage")


@dataclass
class StageContext:
    """Per-task context.

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
    """

    key: str
    stage: str
    data: dict[str, Any] = field(default_factory=dict)
    out: Path = Path(".")

    def splits(self) -> Splits:
        """The pipeline's dataset (loaded once per worker process, then cached)."""
        return load_splits(**self.data)

    @property
    def device(self) -> torch.device:
        # each GPU worker sees exactly its own device (CUDA_VISIBLE_DEVICES), so index 0 is ours
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")

    def artifact_path(self, suffix: str) -> Path:
        return RunDir(self.out).artifact(self.key, suffix)

    def progress(self, **values: Any) -> None:
        """Report progress of a long task (e.g. per epoch) to the worker log and the
        scheduler's event log (topic ``compressflow-progress``), which the client shows."""
        text = " ".join(f"{k}={_fmt(v)}" for k, v in values.items())
        log.info("%s %s", self.stage, text)
        try:
            from distributed import get_worker

            get_worker().log_event("compressflow-progress", {"key": self.key, "stage": self.stage, **values})
        except (ImportError, ValueError):
            pass  # not on a Dask worker


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
