"""``kind: slurm`` end to end: a study run through a real one-node SLURM
(:mod:`tests.e2e.slurm_fixture`) whose workers retire mid-study: a task whose worker reached
its lifetime is handed back, a fresh job takes over, and the study completes with every task
once. (What the spec passes to dask-jobqueue is tested in tests/unit/engine/test_slurm_options.py.)"""

from __future__ import annotations

import sys
import time

import pytest

import compressflow
from tests.e2e.slurm_fixture import slurm  # noqa: F401 (the fixture)
from tests.support import ROOT

#: A plugin of the run, shipped to the workers (written to a file at run time rather than kept
#: as a module here: pytest's doctest collection would import it and register ``paced_train``
#: in the test process, where tests parametrized over every registered op would meet it).
PACED_OP = '''\
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
'''


def _study(epochs: int, epoch_s: float) -> dict:
    net = {"model": "resnet18", "width": 0.125, "batch_size": 128, "warmup_epochs": 0}
    return {
        "name": "slurm-walltime",
        "data": {"dataset": "digits", "image_size": 8, "channels": 1},
        "stages": {
            # longer than a worker's lifetime (epochs * epoch_s at least): it has to move to
            # another worker (job) to finish
            "long": {"op": "paced_train", "params": {**net, "epochs": epochs, "epoch_s": epoch_s}},
            "short": {"op": "train", "params": {**net, "epochs": 2}, "sweep": {"seed": [0, 1]}},
        },
    }


@pytest.mark.slow
def test_study_outlives_worker_lifetimes_on_a_real_slurm(slurm, tmp_path, fresh_names):  # noqa: F811 (the fixture)
    jobs_before = set(slurm.jobs_allocated())
    cluster = {
        "kind": "slurm",
        "queue": slurm.partition,
        "cores": 1,
        "processes": 1,
        "memory": "1500MB",
        "gpus_per_job": 0,
        "walltime": "00:02:00",
        # a worker retires 25 +- 3 s after it starts: the long task (30 s or more) outlives it
        "lifetime": "25s",
        "lifetime_stagger": "3s",
        "adapt": {"minimum_jobs": 1, "maximum_jobs": 2},
        "python": sys.executable,
        "security": "none",
        "scheduler_options": {"host": "127.0.0.1", "dashboard_address": ":0"},
        "job_script_prologue": [f"export PYTHONPATH='{ROOT}'", "export OMP_NUM_THREADS=1"],
        "log_directory": str(tmp_path / "jobs"),
    }
    out = tmp_path / "run"
    plugin = tmp_path / "slurm_paced_op.py"
    plugin.write_text(PACED_OP, encoding="utf-8")
    t0 = time.monotonic()
    tree = compressflow.run(_study(epochs=12, epoch_s=2.5), cluster=cluster, out=out, plugins=[plugin],
                            show_progress=False)
    took = time.monotonic() - t0
    tasks = tree["tasks"].to_dataset()
    keys = [str(k) for k in tasks["task"].values]
    status = dict(zip(keys, (str(s) for s in tasks["status"].values)))
    assert status and set(status.values()) == {"ok"}, status
    assert len(set(keys)) == len(keys) == 3

    # every task's record written once: one record file per key, and one attempt per key that
    # ended ok (a record is written exactly when an attempt ends ok)
    assert sorted(p.stem for p in (out / "records").glob("*.json")) == sorted(keys)
    for key in keys:
        lines = (out / "attempts" / f"{key}.log").read_text(encoding="utf-8").splitlines()
        ends = [line.split() for line in lines if line.split()[2:3] == ["end"]]
        assert [e[4] for e in ends].count("ok") == 1, lines

    # the long task ran on two or more workers: its first worker reached its lifetime mid-task
    long_key = next(k for k, s in zip(keys, tasks["stage"].values) if str(s) == "long")
    i = keys.index(long_key)
    tried = str(tasks["workers_tried"].values[i]).split()
    assert int(tasks["attempts"].values[i]) >= 2 and len(set(tried)) >= 2, tried
    # ... the killed attempts' energy stays in the task's total
    assert float(tasks["energy_lost_kwh"].values[i]) > 0
    # ... and the attempt that finished resumed from the checkpoint, not from epoch 0
    assert int(tasks["resumed_from_epoch"].values[i]) > 0

    # the workers were SLURM jobs: each worker address is in the log of a job slurmctld started
    # (dask-jobqueue's job logs, dask-worker-<jobid>.err), and the long task's took two jobs
    started = {}
    for log in (tmp_path / "jobs").glob("dask-worker-*.err"):
        for line in log.read_text(errors="replace").splitlines():
            if "Start worker at:" in line:
                started[line.split()[-1]] = int(log.stem.rsplit("-", 1)[1])
    workers = {w for t in tasks["workers_tried"].values for w in str(t).split()}
    assert workers <= set(started), (workers, started)
    jobs = set(slurm.jobs_allocated()) - jobs_before
    assert {started[w] for w in workers} <= jobs, (started, jobs)
    assert len({started[w] for w in tried}) >= 2, (tried, started, took)
    # no job left behind once the cluster closed
    deadline = time.monotonic() + 30
    while slurm.run("squeue", "-h", "-o", "%i").stdout.split() and time.monotonic() < deadline:
        time.sleep(1)
    assert slurm.run("squeue", "-h", "-o", "%i").stdout.split() == []
