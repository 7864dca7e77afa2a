"""Losing a worker mid-pipeline: Dask retries its task on a surviving (or restarted) worker,
the run completes, and the ledger shows the retry with no record lost or duplicated."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import compressflow
from compressflow.cluster import local_cluster


def test_kill_9_of_a_worker_mid_task_is_retried(tmp_path):
    from distributed import Client

    spec = {"name": "kill", "stages": {"w": {"op": "wait", "params": {"seconds": 1.5, "busy": True},
                                             "sweep": {"label": list(range(6))}}}}
    with local_cluster(n_workers=2, dashboard_address=":0") as cluster, Client(cluster) as client:
        pids = client.run(os.getpid)  # worker address -> process id
        result = {}
        runner = threading.Thread(target=lambda: result.setdefault(
            "tree", compressflow.run(spec, cluster=client, out=tmp_path, show_progress=False)))
        runner.start()
        attempts = tmp_path / "attempts"
        deadline = time.time() + 30
        while time.time() < deadline and len(list(attempts.glob("*.log")) if attempts.exists() else []) < 2:
            time.sleep(0.05)  # both workers are inside a task now
        time.sleep(0.5)
        victim = sorted(pids)[0]
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


def test_worker_lost_while_the_meter_is_installed_does_not_stop_the_run(caplog):
    """The benchmark found it: a worker killed during plugin registration made run() raise."""
    from distributed.comm.core import CommClosedError

    from compressflow.runner import _install_meter

    class Client:
        def register_plugin(self, plugin, name):
            raise CommClosedError("in <TCP (closed) ConnectionPool.register_worker_plugin>: Stream is closed")

    _install_meter(Client(), object())
    assert "a worker left while the energy meter was being installed" in caplog.text
