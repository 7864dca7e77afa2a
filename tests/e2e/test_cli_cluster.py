"""A real multi-process cluster started with Dask's own CLI: ``dask scheduler`` and two
``dask worker`` processes on 127.0.0.1, a pipeline run against the address through the
compressflow CLI, then everything torn down."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from compressflow.cli import main
from tests.support import tiny_spec

DASK = str(Path(sys.executable).parent / "dask")


@pytest.fixture
def dask_cli_cluster(tmp_path):
    info = tmp_path / "scheduler.json"
    procs = [subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(info)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.time() + 60
        while not info.exists() and time.time() < deadline:
            time.sleep(0.2)
        address = json.loads(info.read_text())["address"]
        for _ in range(2):
            procs.append(subprocess.Popen([DASK, "worker", address, "--nthreads", "1", "--no-dashboard",
                                           "--host", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client

        with Client(address, timeout=30) as c:
            c.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.mark.slow
def test_pipeline_on_a_cluster_started_with_the_dask_cli(dask_cli_cluster, tmp_path, capsys):
    import compressflow

    spec = tiny_spec()
    spec["stages"]["teacher"]["sweep"] = {"seed": [0, 1]}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "run"
    assert main(["run", str(path), "--cluster", dask_cli_cluster, "--out", str(out), "--quiet"]) == 0
    tree = compressflow.open_results(out)
    ledger = tree["tasks"].to_dataset()
    assert (ledger.status == "ok").all() and ledger.sizes["task"] == 4
    assert all(str(w).startswith("tcp://127.0.0.1:") for w in ledger.worker.values)
    assert len(set(ledger.worker.values.tolist())) == 2  # both CLI-started workers did work
    assert (ledger.energy_kwh > 0).all()  # the energy plugin was installed on workers we did not start
