"""``wait``: a calibration task that sleeps (or spins) for a given time and trains nothing.

It measures what the framework itself costs per task (scheduling, metering, records) and
drives scheduling simulations with known task durations (e.g. the blockwise paper's uneven
VGG16 layer times)."""

from __future__ import annotations

import time
from typing import Annotated

from pydantic import Field

from compressflow.ops import OpContext, Record
from compressflow.registries import OPS

__all__ = ["CHECK_EVERY_S", "wait"]

#: seconds between two checks of whether a long wait should stop
CHECK_EVERY_S = 0.25


@OPS.register(data=None)
def wait(
    ctx: OpContext,
    *,
    seconds: Annotated[float, Field(ge=0, le=3600)] = 0.0,
    busy: bool = False,
    label: int = 0,
) -> Record:
    """Sleep (``busy=False``) or spin the CPU (``busy=True``) for ``seconds``, checking every
    :data:`CHECK_EVERY_S` whether the task should stop (a cancelled stage, a Ctrl-C).

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
    import xarray as xr

    t0 = time.perf_counter()
    end, checked = t0 + seconds, t0
    while (now := time.perf_counter()) < end:
        if now - checked >= CHECK_EVERY_S:
            ctx.check_cancelled()
            checked = now
        if not busy:
            time.sleep(min(end - now, CHECK_EVERY_S))
    elapsed = xr.DataArray(time.perf_counter() - t0, attrs={"units": "s"})
    return Record(xr.Dataset({"elapsed_s": elapsed}))
