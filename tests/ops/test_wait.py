from pathlib import Path

from compressflow.ops.context import OpContext
from compressflow.ops.wait import wait


def test_wait_sleeps_and_spins_for_the_asked_time(tmp_path: Path):
    ctx = OpContext("k", "noop", {}, tmp_path)
    assert 0.05 <= float(wait(ctx, seconds=0.05).metrics.elapsed_s) < 0.5
    assert 0.05 <= float(wait(ctx, seconds=0.05, busy=True).metrics.elapsed_s) < 0.5
    assert float(wait(ctx).metrics.elapsed_s) < 0.05
