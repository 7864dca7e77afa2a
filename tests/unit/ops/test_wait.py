"""The ``wait`` op: it takes the asked time, and a long wait stops when its stage is cancelled."""

from pathlib import Path

from compressflow.ops.context import OpContext
from compressflow.ops.wait import wait


def test_wait_sleeps_and_spins_for_the_asked_time(tmp_path: Path):
    ctx = OpContext("k", "noop", {}, tmp_path)
    assert 0.05 <= float(wait(ctx, seconds=0.05).metrics.elapsed_s) < 0.5
    assert 0.05 <= float(wait(ctx, seconds=0.05, busy=True).metrics.elapsed_s) < 0.5
    assert float(wait(ctx).metrics.elapsed_s) < 0.05


def test_a_long_wait_stops_when_its_stage_is_cancelled(tmp_path: Path):
    import time

    import pytest

    from compressflow.ops import Cancelled
    from compressflow.ops.wait import CHECK_EVERY_S

    for busy in (False, True):
        checks = []

        def stop() -> None:
            checks.append(time.perf_counter())
            if len(checks) == 2:
                raise Cancelled("stage 'noop' was cancelled")

        ctx = OpContext("k", "noop", {}, tmp_path, stop_check=stop)
        t0 = time.perf_counter()
        with pytest.raises(Cancelled):
            wait(ctx, seconds=60, busy=busy)
        assert len(checks) == 2 and time.perf_counter() - t0 < 10 * CHECK_EVERY_S  # not the whole minute
        assert checks[1] - checks[0] >= CHECK_EVERY_S * 0.9  # checked at its interval, not every spin
