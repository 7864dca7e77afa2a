"""``kind: slurm`` without SLURM: how a spec's walltime, lifetime and adapt reach dask-jobqueue (a
stand-in class records what ``SLURMCluster`` receives), and walltimes read as SLURM reads them."""

import sys
import types

import pytest

from compressflow.engine.cluster_options import check_options


class FakeSLURM:
    """Records the keyword arguments, ``scale`` and ``adapt`` calls dask-jobqueue would get."""

    seen: dict = {}

    def __init__(self, **kwargs):
        FakeSLURM.seen = {"init": kwargs}

    def scale(self, jobs):
        FakeSLURM.seen["scale"] = jobs

    def adapt(self, **kwargs):
        FakeSLURM.seen["adapt"] = kwargs


@pytest.fixture
def fake_slurm(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_jobqueue", types.SimpleNamespace(SLURMCluster=FakeSLURM))
    from compressflow.engine.cluster_kinds import make_cluster

    def make(**options):
        make_cluster("slurm", check_options("slurm", options))
        return FakeSLURM.seen

    return make


def test_lifetime_and_adapt_reach_the_workers(fake_slurm):
    seen = fake_slurm(walltime="00:20:00", lifetime="15m", lifetime_stagger="2m", gpus_per_job=0,
                      adapt={"minimum_jobs": 1, "maximum_jobs": 4}, cores=1)
    assert seen["init"]["worker_extra_args"] == ["--lifetime", "900s", "--lifetime-stagger", "120s"]
    assert seen["init"]["walltime"] == "00:20:00" and "lifetime" not in seen["init"] and "adapt" not in seen["init"]
    assert seen["adapt"] == {"minimum_jobs": 1, "maximum_jobs": 4} and "scale" not in seen


def test_lifetime_defaults_to_walltime_minus_a_margin(fake_slurm):
    # 1 h: a margin of 10 % (6 min), staggered by a quarter of it: workers end 52.5..55.5 min in
    args = fake_slurm(walltime="01:00:00", jobs=3)["init"]["worker_extra_args"]
    assert args == ["--resources", "GPU=1", "--lifetime", "3240s", "--lifetime-stagger", "90s"]
    # 8 h: the margin is capped at 10 min
    seen = fake_slurm(walltime="08:00:00", jobs=2, gpus_per_job=0)
    assert seen["init"]["worker_extra_args"] == ["--lifetime", "28200s", "--lifetime-stagger", "150s"]
    assert seen["scale"] == 2 and "adapt" not in seen
    # no walltime and no lifetime: workers live as long as their job
    assert fake_slurm(jobs=1, gpus_per_job=0)["init"]["worker_extra_args"] == []


@pytest.mark.parametrize("text, seconds", [("90", 5400), (90, 5400), ("1:30", 90), ("01:00:00", 3600),
                                           ("1-2", 93600), ("1-2:30", 95400), ("1-00:00:01", 86401)])
def test_walltime_is_read_as_slurm_reads_it(text, seconds):
    from compressflow.engine.cluster_options import slurm_seconds

    assert slurm_seconds(text) == seconds
