"""``wait``: a calibration task that sleeps (or spins) for a given time and trains nothing.

It measures what the framework itself costs per task (scheduling, metering, records) and
drives scheduling simulations with known task durations (e.g. the blockwise paper's uneven
VGG16 layer times)."""

from __future__ import annotations

import time
from typing import Annotated

import xarray as xr
from pydantic import Field

from compressflow.engine.records import Record
from compressflow.registries import OPS
from compressflow.ops.context import OpContext

__all__ = ["wait"]


@OPS.register
def wait(
    ctx: OpContext,
    *,
    seconds: Annotated[float, Field(ge=0, le=3600)] = 0.0,
    busy: bool = False,
    label: int = 0,
) -> Record:
    """Sleep (``busy=False``) or spin the CPU (``busy=True``) for ``seconds``.

    Parameters
    ----------
    seconds : float
        How long the task takes.
    busy : bool
        Spin instead of sleeping, so the energy meter sees a loaded CPU.
    label : int
        Only distinguishes otherwise identical tasks (sweep it to make N tasks).

    Returns
    -------
    Record
        ``elapsed_s``: the measured time inside the task.
    """
    t0 = time.perf_counter()
    if busy:
        while time.perf_counter() - t0 < seconds:
            pass
    elif seconds:
        time.sleep(seconds)
    elapsed = xr.DataArray(time.perf_counter() - t0, attrs={"units": "s"})
    return Record(xr.Dataset({"elapsed_s": elapsed}))
