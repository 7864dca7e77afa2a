"""User plugins on real processes: built-ins registered by the first lookup in a fresh process,
a bad ``--plugin`` named by the CLI, and a user op and model reaching every worker of a cluster
started with the ``dask`` CLI (whose Python path does not hold the user's file) — including a
worker that joins mid-run — and, once the user edits the file, running again (not reused) on the
same long-lived workers, which import the edit, with the built-in op that builds the file's model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.support.plugin_files import USER_OPS

DASK = str(Path(sys.executable).parent / "dask")


#: tiny_mlp's parameters on 1-channel digits: (16 * 32 + 32) + (32 * 10 + 10)
TINY_MLP_PARAMS = 874


@pytest.mark.slow
def test_builtins_are_registered_by_the_first_lookup_in_a_fresh_process():
    code = ("import sys; from compressflow.registries import OPS, SUMMARIES, BLOCKS; "
            "print(sorted({'train', 'prune', 'svcca'} & set(OPS)), 'kd_comparison' in SUMMARIES, len(BLOCKS) > 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["['prune',", "'svcca',", "'train']", "True", "True"]


def _spec(**extra) -> dict:
    return {"name": "p", "data": {"dataset": "digits", "image_size": 8, "channels": 1},
            "stages": {"probe": {"op": "fit_probe", "params": {"model": "tiny_mlp", "steps": 2}}}, **extra}


def test_cli_names_a_bad_plugin_option(tmp_path, capsys):
    from compressflow.cli import main

    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(_spec()))
    assert main(["run", str(tmp_path / "spec.yaml"), "--plugin", str(tmp_path / "gone.py")]) == 2
    assert capsys.readouterr().err.startswith("compressflow: error: --plugin: no file ")


class DaskCLI:
    """``dask scheduler`` and ``dask worker`` processes on 127.0.0.1 (plain TCP), run from a
    folder and with a Python path that do not hold the user's files."""

    def __init__(self, home: Path, pythonpath: list[str]) -> None:
        self.home = home
        home.mkdir()
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath), "OMP_NUM_THREADS": "1"}
        self.procs: list[subprocess.Popen] = []
        info = home / "scheduler.json"
        self._start([DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                     "--scheduler-file", str(info)])
        deadline = time.time() + 60
        while not info.exists() and time.time() < deadline:
            time.sleep(0.2)
        self.address = json.loads(info.read_text())["address"]

    def _start(self, argv: list[str]) -> None:
        self.procs.append(subprocess.Popen(argv, cwd=self.home, env=self.env,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def start_worker(self) -> None:
        self._start([DASK, "worker", self.address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                     "--host", "127.0.0.1"])

    def workers(self, n: int) -> set[str]:
        from distributed import Client

        with Client(self.address, timeout=30) as c:
            c.wait_for_workers(n, timeout=120)
            return set(c.scheduler_info(n_workers=-1)["workers"])

    def close(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture
def dask_cli(tmp_path):
    pythonpath = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    cluster = DaskCLI(tmp_path / "cluster", pythonpath)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.mark.slow
def test_user_op_and_model_reach_cli_started_workers_and_one_that_joins_mid_run(dask_cli, fresh_names, tmp_path):
    from compressflow import open_results
    from compressflow.cli import main

    user = tmp_path / "user"
    user.mkdir()
    (user / "user_ops.py").write_text(USER_OPS)
    assert not any(str(user) in p for p in dask_cli.env["PYTHONPATH"].split(os.pathsep))
    for _ in range(2):
        dask_cli.start_worker()
    first_two = dask_cli.workers(2)
    out, gate = tmp_path / "run", tmp_path / "gate"
    spec = _spec()
    spec["stages"] = {
        # a built-in op building the user's model on a worker
        "teacher": {"op": "train", "params": {"model": "tiny_mlp", "width": 1.0, "epochs": 1, "batch_size": 128}},
        # the user's op; its tasks wait at the gate until the third worker has joined
        "probe": {"op": "fit_probe", "params": {"model": "tiny_mlp", "steps": 20, "gate": str(gate)},
                  "sweep": {"seed": list(range(8))}},
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    joined: dict[str, set[str]] = {}

    def join_once_the_run_is_live() -> None:
        from compressflow.rundir import RunDir

        deadline = time.time() + 300  # the probes wait at the gate, holding both workers, until it opens
        while not RunDir(out).state().live and time.time() < deadline:
            time.sleep(0.1)
        dask_cli.start_worker()
        joined["third"] = dask_cli.workers(3) - first_two
        gate.write_text("open")

    helper = threading.Thread(target=join_once_the_run_is_live, daemon=True)
    helper.start()
    code = main(["run", str(tmp_path / "spec.yaml"), "--cluster", dask_cli.address, "--out", str(out), "--quiet",
                 "--plugin", str(user / "user_ops.py")])
    helper.join(timeout=60)
    assert code == 0
    tree = open_results(out)
    ledger = tree["tasks"].to_dataset()
    assert (ledger.status == "ok").all() and ledger.sizes["task"] == 9
    probe = tree["probe"].to_dataset()
    assert (probe.params == TINY_MLP_PARAMS).all()
    assert (probe.shipped == 1.0).all()  # every worker imported the shipped copy
    assert float(probe.accuracy.min()) > 0.3  # 20 full-batch steps on digits: well above chance (0.1)
    assert int(tree["teacher"].to_dataset().params) == TINY_MLP_PARAMS
    [teacher_key] = [str(k) for k, stage in zip(ledger.task.values, ledger.stage.values) if stage == "teacher"]
    [third] = joined["third"]
    workers = {str(w) for w, stage in zip(ledger.worker.values, ledger.stage.values) if stage == "probe"}
    assert third in workers, (third, workers)  # the worker that joined mid-run ran the user op

    # the user adds a metric to the op and runs again (two of its seeds): the edited op's tasks have new keys
    (user / "user_ops.py").write_text(USER_OPS.replace('"shipped":', '"steps_run": float(steps), "shipped":'))
    spec["stages"]["probe"]["sweep"] = {"seed": [0, 1]}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    argv = ["run", str(tmp_path / "spec.yaml"), "--cluster", dask_cli.address, "--out", str(out), "--quiet",
            "--plugin", str(user / "user_ops.py")]
    assert main(argv) == 0  # on the same workers, which imported the first version: they import the edit
    edited = open_results(out)
    again = edited["tasks"].to_dataset()
    probes = [str(k) for k, st in zip(again.task.values, again.stage.values) if st == "probe"]
    assert len(probes) == 2 and set(probes).isdisjoint(ledger.task.values)  # new keys: the edited source
    assert (edited["probe"].to_dataset().steps_run == 20).all()  # the edited op ran: the new metric is there
    # the built-in train op builds the user's model, defined in the edited file: it trains again too
    [teacher_again] = [str(k) for k, st in zip(again.task.values, again.stage.values) if st == "teacher"]
    assert teacher_again != teacher_key and set(again.task.values) == {*probes, teacher_again}
    assert (again.status == "ok").all() and not again.reused.values.any()
