"""A plugin of the SLURM end-to-end test (shipped to the workers by ``plugins=[this file]``):
``paced_train`` is ``train`` whose epochs last at least ``epoch_s`` seconds, so that a task
outlives a worker's lifetime on a fast machine as on a loaded one."""

from __future__ import annotations

import time
from typing import Any

from compressflow.ops.schedule import Schedule, check_schedule
from compressflow.ops.train import train
from compressflow.registries import OPS


class _Paced:
    """The op context, with ``fit`` waiting out the rest of ``epoch_s`` after each epoch."""

    def __init__(self, ctx: Any, epoch_s: float) -> None:
        self._ctx, self._epoch_s = ctx, epoch_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def fit(self, *args: Any, on_epoch: Any = None, **kwargs: Any) -> Any:
        last = [time.monotonic()]

        def paced(epoch: int, hist: Any) -> None:
            time.sleep(max(0.0, self._epoch_s - (time.monotonic() - last[0])))
            last[0] = time.monotonic()
            if on_epoch is not None:
                on_epoch(epoch, hist)

        return self._ctx.fit(*args, on_epoch=paced, **kwargs)


@OPS.register(check=check_schedule)
def paced_train(ctx: Any, *, model: str = "resnet18", width: float = 0.25, schedule: Schedule = Schedule(),
                seed: int = 0, epoch_s: float = 1.0) -> Any:
    """``train`` with epochs of at least ``epoch_s`` seconds."""
    return train(_Paced(ctx, epoch_s), model=model, width=width, schedule=schedule, seed=seed)
