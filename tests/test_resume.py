"""Resume: a run interrupted with Ctrl-C (SIGINT to the CLI) keeps every finished task's
record; re-running the same spec into the same directory recomputes none of them and gives
the same results as an uninterrupted run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import yaml

import compressflow

SPEC = {"name": "resume", "stages": {"w": {"op": "wait", "params": {"seconds": 0.6},
                                           "sweep": {"label": list(range(10))}}}}


def test_interrupted_run_resumes_without_recomputing(client, tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "compressflow.cli", "run", str(path), "--out", str(out), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    records = out / "records"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(records.glob("*.json")) if records.exists() else []) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()[-2000:]
    finished = {p.stem for p in records.glob("*.json")}
    assert 3 <= len(finished) < 10  # interrupted part-way
    tree = compressflow.run(SPEC, cluster=client, out=out, show_progress=False)
    ledger = tree["tasks"].to_dataset()
    assert (ledger.status == "ok").all() and ledger.sizes["task"] == 10
    for key in finished:  # started once, in the interrupted run: not recomputed
        assert len((out / "attempts" / f"{key}.log").read_text().splitlines()) == 1
    fresh = compressflow.run(SPEC, cluster=client, out=tmp_path / "fresh", show_progress=False)
    a, b = tree["w"].to_dataset(), fresh["w"].to_dataset()
    assert set(a.data_vars) == set(b.data_vars) and list(a.label.values) == list(b.label.values)
    np.testing.assert_allclose(a.elapsed_s, b.elapsed_s, atol=0.2)  # each task slept its 0.6 s
    assert list(tree["tasks"]["task"].values) == list(fresh["tasks"]["task"].values)
    assert json.loads(tree.attrs["spec"]) == json.loads(fresh.attrs["spec"])


def test_work_reused_by_another_spec_is_labelled_by_the_new_spec(client, tmp_path):
    # a task's key is its work (op, parameters, inputs), not its stage name or how its values
    # were given: a second spec reaching the same work reuses it, under its own labels
    first = {"name": "one", "stages": {"single": {"op": "wait", "params": {"label": 1}}}}
    second = {"name": "two", "stages": {"swept": {"op": "wait", "sweep": {"label": [1, 2]}}}}
    compressflow.run(first, cluster=client, out=tmp_path, show_progress=False)
    (reused,) = [p.stem for p in (tmp_path / "records").glob("*.json")]
    tree = compressflow.run(second, cluster=client, out=tmp_path, show_progress=False)
    ledger = tree["tasks"].to_dataset()
    assert reused in ledger.task.values and ledger.sizes["task"] == 2
    assert list(ledger.stage.values) == ["swept", "swept"]
    assert json.loads(str(ledger.point.sel(task=reused).values)) == {"label": 1}
    swept = tree["swept"].to_dataset()
    assert list(swept.label.values) == [1, 2] and str(swept.task_key.sel(label=1).values) == reused
    assert len((tmp_path / "attempts" / f"{reused}.log").read_text().splitlines()) == 1  # not recomputed
