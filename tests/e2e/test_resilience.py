"""Losing a worker mid-pipeline (``kill -9``): Dask retries its task on a surviving (or restarted)
worker, the run completes, the ledger shows the retry with no record lost or duplicated, and
the killed attempt's energy counts in the task's total."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

import compressflow
from compressflow.engine.cluster import local_cluster


@pytest.fixture(scope="module")
def killable():
    """An embedded cluster of two worker processes, started once for the module (each test
    kills one worker; its nanny restarts it, and the next test waits for both)."""
    from distributed import Client

    with local_cluster(n_workers=2, dashboard_address=":0") as cluster, Client(cluster) as client:
        yield client


def _worker_pids(client) -> dict[str, int]:
    """Worker address -> process id, once both workers are up (a killed one is restarted)."""
    client.wait_for_workers(2, timeout=120)
    return client.run(os.getpid)


def _worker_inside_a_task(attempts, deadline: float) -> str:
    from compressflow.rundir.attempts import parse_attempts

    while time.time() < deadline:
        for log in attempts.glob("*.log") if attempts.exists() else []:
            running = [a for a in parse_attempts(log.read_text().splitlines()).values() if not a.status]
            if running:
                return running[-1].worker
        time.sleep(0.02)
    raise AssertionError("no task started within the deadline")


@pytest.mark.slow
def test_kill_9_of_a_worker_mid_task_is_retried(killable, tmp_path):
    client = killable
    spec = {"name": "kill", "stages": {"w": {"op": "wait", "params": {"seconds": 1.5, "busy": True},
                                             "sweep": {"label": list(range(6))}}}}
    pids = _worker_pids(client)
    result = {}
    runner = threading.Thread(target=lambda: result.setdefault(
        "tree", compressflow.run(spec, cluster=client, out=tmp_path, show_progress=False)))
    runner.start()
    # kill a worker that the attempt logs show inside a task (started, not ended), whatever the
    # machine's load does to the timing (a worker between tasks would leave nothing to retry)
    victim = _worker_inside_a_task(tmp_path / "attempts", deadline=time.time() + 60)
    os.kill(pids[victim], signal.SIGKILL)
    runner.join(timeout=120)
    tree = result["tree"]
    ledger = tree["tasks"].to_dataset()
    assert (ledger.status == "ok").all() and ledger.sizes["task"] == 6
    labels = sorted(json.loads(p)["label"] for p in ledger.point.values)
    assert labels == list(range(6))  # every task once in the ledger
    assert len(list((tmp_path / "records").glob("*.json"))) == 6  # one record per task, none lost
    retried = ledger.isel(task=(ledger.attempts.values > 1))
    assert retried.sizes["task"] >= 1
    first_worker = [str(w).split()[0] for w in retried.workers_tried.values]
    assert victim in first_worker  # the retried task had started on the killed worker
    assert all(str(w) != victim for w in retried.worker.values)  # and finished elsewhere
    assert (ledger.attempts.values >= 1).all()


@pytest.mark.slow
def test_energy_of_a_killed_attempt_counts_in_the_task_total(killable, tmp_path):
    client = killable
    spec = {"name": "kill-energy", "data": {"dataset": "digits", "image_size": 8, "channels": 1},
            "stages": {"teacher": {"op": "train", "params": {"model": "resnet18", "width": 0.125, "epochs": 8,
                                                             "batch_size": 128}}}}
    pids = _worker_pids(client)
    result = {}
    runner = threading.Thread(target=lambda: result.setdefault(
        "tree", compressflow.run(spec, cluster=client, out=tmp_path, show_progress=False)))
    runner.start()
    attempts = tmp_path / "attempts"

    def sampled() -> list[str]:
        logs = list(attempts.glob("*.log")) if attempts.exists() else []
        return [ln for ln in logs[0].read_text().splitlines() if " energy " in ln] if logs else []

    deadline = time.time() + 120
    while time.time() < deadline and len(sampled()) < 2:
        time.sleep(0.05)  # two epochs done: the attempt has logged its energy so far
    (victim,) = {ln.split()[0] for ln in sampled()}
    os.kill(pids[victim], signal.SIGKILL)
    runner.join(timeout=300)
    ledger = result["tree"]["tasks"].to_dataset().isel(task=0)  # the one task
    assert str(ledger.status.values) == "ok" and int(ledger.attempts) == 2
    # by hand from the log: the killed attempt's last sample is lost; the other attempt ended ok
    lines = [ln.split() for ln in next(attempts.glob("*.log")).read_text().splitlines()]
    killed_id = next(p[3] for p in lines if p[2] == "start" and p[0] == victim)
    last = [p for p in lines if p[2] == "energy" and p[3] == killed_id][-1]
    (end,) = [p for p in lines if p[2] == "end"]
    assert end[4] == "ok" and end[0] != victim and not any(p[2] == "end" and p[3] == killed_id for p in lines)
    lost = [float(v) for v in last[4:7]]
    final = [float(v) for v in end[5:8]]
    assert sum(lost) > 0
    assert float(ledger.energy_lost_kwh) == pytest.approx(sum(lost), rel=1e-12)
    for i, name in enumerate(("cpu_kwh", "gpu_kwh", "ram_kwh")):
        assert float(ledger[name]) == pytest.approx(lost[i] + final[i], rel=1e-12, abs=1e-18)
    assert float(ledger.energy_kwh) == pytest.approx(sum(lost) + sum(final), rel=1e-12)
    assert float(ledger.facility_kwh) == pytest.approx(float(ledger.energy_kwh))  # PUE 1.0
