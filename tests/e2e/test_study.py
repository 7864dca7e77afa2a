"""compressflow.submit: the handle returns at once, reports per-stage status and partial results
while the study runs, cancels a stage at an epoch boundary (keeping its energy), and writes the
same results as run(); its progress reaches a script's stderr redirected to a file."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import compressflow
from compressflow.errors import InputError
from compressflow.rundir.attempts import parse_attempts

WAITS = {
    "name": "waits",
    "stages": {
        "slow": {"op": "wait", "params": {"seconds": 2.0}, "sweep": {"label": [0, 1, 2]}},
        "after": {"op": "wait", "needs": {}, "params": {"seconds": 0.0, "label": 9}},
    },
}


def _until(predicate, timeout=60.0, every=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


@pytest.mark.slow
def test_submit_returns_at_once_and_results_grow(client, tmp_path):
    study = compressflow.submit(WAITS, cluster=client, out=tmp_path / "run")
    assert not study.done and study.state == "running"  # three 2-s tasks on two workers: >= 4 s to go
    rows = {r.stage: r for r in study.status()}
    assert rows["slow"].tasks == 3 and rows["after"].tasks == 1
    assert sum(r.ran + r.running + r.pending for r in rows.values()) == 4  # nothing reused: a fresh run dir
    # partial results: the layout of the final ones, unfinished points NaN with their status
    assert _until(lambda: study.status()[1].ran == 1 or study.done)  # `after` is instant
    partial = study.results()
    slow = partial["slow"].to_dataset()
    assert list(slow.label.values) == [0, 1, 2]
    unfinished = slow.status.values != "ok"
    assert unfinished.any()  # at least one of the 2-s tasks is still pending or running
    assert set(slow.status.values[unfinished]) <= {"pending", "running"}
    assert np.isnan(slow.elapsed_s.values[unfinished]).all()
    table = study.to_dataframe()  # the same as a table: a row per point, NaN until its task ends
    assert list(table.stage) == ["slow"] * 3 + ["after"] and table.elapsed_s[table.status != "ok"].isna().all()
    assert not (tmp_path / "run" / "results.zarr").exists()  # partial results are not written
    tree = study.result()
    assert study.done and study.state == "done"
    assert (tree["tasks"].status.values == "ok").all()
    assert [r.ran for r in study.status()] == [3, 1]
    assert tree["slow"]["elapsed_s"].min() >= 2.0
    on_disk = compressflow.open_results(tmp_path / "run")
    assert sorted(on_disk["tasks"].task.values) == sorted(tree["tasks"].task.values)
    # a re-submission reuses every task: reused counted apart from what ran
    again = compressflow.submit(WAITS, cluster=client, out=tmp_path / "run")
    again.result()
    assert [(r.reused, r.ran) for r in again.status()] == [(3, 0), (1, 0)]
    html = again._repr_html_()
    assert "waits" in html and "<table" in html and "slow" in html


@pytest.mark.slow
def test_cancel_a_training_stage_stops_at_an_epoch_and_keeps_its_energy(client, tmp_path):
    spec = {
        "name": "cancel",
        "data": {"dataset": "digits", "image_size": 8, "channels": 1},
        "stages": {
            "teacher": {"op": "train", "params": {"model": "resnet18", "width": 0.125, "epochs": 24, "batch_size": 64,
                                                  "warmup_epochs": 0}},
            "test": {"op": "evaluate", "needs": {"model": "teacher"}},
            "other": {"op": "wait", "params": {"seconds": 0.5}},
        },
    }
    out = tmp_path / "run"
    study = compressflow.submit(spec, cluster=client, out=out)
    assert _until(lambda: any(p.get("epoch", 0) >= 2 for p in study.running().values()), timeout=120)
    seen = max(p.get("epoch", 0) for p in study.running().values())
    study.cancel("teacher")
    assert study.state == "cancelling"
    tree = study.result()
    ledger = tree["tasks"].to_dataset()
    status = dict(zip(ledger.stage.values, ledger.status.values))
    assert status == {"teacher": "cancelled", "test": "cancelled", "other": "ok"}
    teacher = ledger.isel(task=ledger.stage.values == "teacher")
    assert float(teacher.energy_kwh.item()) > 0  # its energy is kept
    # it stopped at an epoch boundary well before its 24 epochs: the attempt log ended "cancelled"
    key = str(teacher.task.values[0])
    attempts = parse_attempts((out / "attempts" / f"{key}.log").read_text().splitlines())
    assert [a.status for a in attempts.values()] == ["cancelled"]
    # ... and its training state of the epoch it stopped at is kept, for a re-submission to resume
    import torch

    state = torch.load(out / "artifacts" / f"{key}.resume0.pt", weights_only=True)
    assert seen <= int(state["epoch"]) < 24
    assert not (out / "records" / f"{key}.json").exists()  # a re-submission trains it again
    assert study.state == "cancelled"
    rows = {r.stage: r for r in study.status()}
    assert (rows["teacher"].cancelled, rows["test"].cancelled, rows["other"].ran) == (1, 1, 1)
    assert str(tree["teacher"]["status"].values) == "cancelled"  # no metrics: nothing finished there
    # re-submitted: the cancelled task resumes from its state instead of epoch 0
    again = compressflow.submit(spec, cluster=client, out=out)
    redo = again.result()["tasks"].to_dataset()
    row = redo.isel(task=redo.stage.values == "teacher")
    assert str(row.status.values[0]) == "ok", str(row.error.values[0])
    assert int(row.resumed_from_epoch.values[0]) == int(state["epoch"])


def test_cancel_names_the_stages(client, tmp_path):
    study = compressflow.submit(WAITS, cluster=client, out=tmp_path / "run")
    with pytest.raises(InputError, match=r"cancel: no stage 'nope' in study 'waits'; stages: slow, after"):
        study.cancel("nope")
    study.cancel()  # everything: not-started tasks end at once
    rows = study.status()  # ... and show so at once, not as pending until their futures end
    assert sum(r.pending for r in rows) == 0 and sum(r.cancelled for r in rows) >= 1
    tree = study.result()
    assert set(tree["tasks"].status.values) <= {"ok", "cancelled"}
    assert sum(r.cancelled for r in study.status()) == list(tree["tasks"].status.values).count("cancelled") >= 1


#: one stage of two tasks on the session's two workers, for studies sharing one client
PAIR = {"name": "pair", "stages": {"slow": {"op": "wait", "params": {"seconds": 1.0}, "sweep": {"label": [0, 1]}}}}


def _task_keys(spec) -> set[str]:
    from compressflow.engine.graph import expand
    from compressflow.spec import load_spec

    return {n.key for nodes in expand(load_spec(spec)).values() for n in nodes}


@pytest.mark.slow
def test_studies_of_one_spec_on_one_client_each_run_and_record_their_own(client, tmp_path):
    """The same spec into two run directories, at once and then a third one after them: the
    task keys (the records' names) are the same, yet each study runs its own tasks and writes
    its own records and attempts; none reports another's tasks as its own."""
    from compressflow.engine.status import status_from_rundir
    from compressflow.rundir import RunDir

    keys = _task_keys(PAIR)

    def ran_its_own(study) -> None:
        ledger = study.result()["tasks"].to_dataset()
        assert dict(zip(ledger.task.values, ledger.status.values)) == dict.fromkeys(keys, "ok")
        assert set(RunDir(study.out).record_keys()) == keys
        assert [(r.ran, r.reused) for r in study.status()] == [(2, 0)]
        assert [(r.ran, r.pending) for r in status_from_rundir(PAIR, study.out)] == [(2, 0)]
        for key in keys:  # one attempt each, in this run directory's own log
            assert len(parse_attempts((study.out / "attempts" / f"{key}.log").read_text().splitlines())) == 1

    together = [compressflow.submit(PAIR, cluster=client, out=tmp_path / name) for name in ("a", "b")]
    for study in together:
        ran_its_own(study)
    ran_its_own(compressflow.submit(PAIR, cluster=client, out=tmp_path / "c"))  # after them, on the same client


@pytest.mark.slow
def test_cancel_stops_its_own_study_not_another_running_the_same_spec(client, tmp_path):
    from compressflow.rundir import RunDir

    spec = {**PAIR, "stages": {"slow": {**PAIR["stages"]["slow"], "params": {"seconds": 2.0}}}}
    other = compressflow.submit(spec, cluster=client, out=tmp_path / "other")
    mine = compressflow.submit(spec, cluster=client, out=tmp_path / "mine")  # the same tasks, while the other runs
    mine.cancel("slow")
    cancelled, ran = mine.result()["tasks"].to_dataset(), other.result()["tasks"].to_dataset()
    assert list(cancelled.status.values) == ["cancelled", "cancelled"] and mine.state == "cancelled"
    assert list(ran.status.values) == ["ok", "ok"] and other.state == "done"
    assert (ran.energy_kwh.values > 0).all()
    assert RunDir(mine.out).record_keys() == [] and set(RunDir(other.out).record_keys()) == _task_keys(spec)


def test_bad_input_is_refused_by_submit_itself(tmp_path):
    bad = {"name": "bad", "stages": {"s": {"op": "nope"}}}
    with pytest.raises(InputError, match="nope"):
        compressflow.submit(bad, out=tmp_path / "run")
    assert not (tmp_path / "run" / "results.zarr").exists()


def test_a_study_waits_on_its_own_client_not_the_process_default(client, tmp_path, monkeypatch):
    """CI hung here: ``as_completed`` took the loop of the process's default client, which after
    another study (an embedded cluster, in another thread) had closed was a dead one, so the
    next study on a live client waited forever. The study now hands it its own client's loop."""
    import distributed.client as dclient

    def no_default(*_args, **_kwargs):
        raise AssertionError("the study asked for the process's default client")

    monkeypatch.setattr(dclient, "default_client", no_default)
    spec = {"name": "own-loop", "stages": {"a": {"op": "wait", "params": {"seconds": 0.0, "label": 3}}}}
    study = compressflow.submit(spec, cluster=client, out=tmp_path / "run")
    assert study.wait(60), "the study did not end within 60 s"
    tree = study.result()
    assert list(tree["tasks"]["status"].values) == ["ok"]


SUBMIT_ON_FRESH_WORKERS = """
import json, sys, time
import compressflow
from tests.support import tiny_spec

def preloaded():
    import sys
    from compressflow.engine.execute import PRELOAD
    return all(name in sys.modules for name in PRELOAD)

start = time.perf_counter()
study = compressflow.submit(tiny_spec(), out=sys.argv[1])  # an embedded cluster: fresh workers
returned = time.perf_counter() - start
client_torch = "torch" in sys.modules
workers_ready_at_return = list(study.client.run(preloaded).values())
while not all(study.client.run(preloaded).values()):
    time.sleep(0.05)
ready = time.perf_counter() - start
tree = study.result()
print(json.dumps({"returned_s": returned, "workers_ready_s": ready, "client_torch": client_torch,
                  "ready_at_return": workers_ready_at_return, "ok": bool((tree["tasks"]["status"] == "ok").all())}))
"""


#: imported by every process of the test's study (PYTHONPATH): importing torchvision takes 4 s
#: longer, so whether ``submit`` waited for the workers' imports does not depend on the machine
SLOW_TORCHVISION = """
import importlib.abc, sys, time

class SlowTorchvision(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            time.sleep(4.0)
        return None

sys.meta_path.insert(0, SlowTorchvision())
"""


@pytest.mark.slow
def test_submit_returns_before_fresh_workers_have_imported_torch(tmp_path):
    """``submit`` on a cluster it starts itself returns while the new workers are still importing
    torch in the background (PreloadPlugin), and the client imports no torch to get there."""
    import json
    import os
    import subprocess
    import sys

    from tests.support import ROOT

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SLOW_TORCHVISION)
    path = [str(tmp_path / "site"), str(ROOT), os.environ.get("PYTHONPATH")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}
    done = subprocess.run([sys.executable, "-c", SUBMIT_ON_FRESH_WORKERS, str(tmp_path / "run")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"submit() returned after {got['returned_s']:.2f} s; the workers had imported torch after "
          f"{got['workers_ready_s']:.2f} s")
    assert got["ok"] and not got["client_torch"]
    assert not all(got["ready_at_return"]), got
    assert got["returned_s"] < got["workers_ready_s"], got


LINES = {"name": "lines", "stages": {"slow": {"op": "wait", "params": {"seconds": 0.3}, "sweep": {"label": [0, 1]}},
                                     "after": {"op": "wait", "params": {"seconds": 0.0, "label": 9}}}}

SCRIPT = textwrap.dedent("""
    import sys
    import compressflow

    spec, address, out = eval(sys.argv[1]), sys.argv[2], sys.argv[3]
    study = compressflow.submit(spec, cluster=address, out=out)
    study.progress()
    study.result()
    compressflow.run(spec, cluster=address, out=out)  # again: every task reused
""")


def test_progress_lines_reach_a_file_and_run_says_what_it_reused(client, tmp_path):
    """A plain script (a batch job, ``nohup``, CI) with stderr redirected to a file and no logging
    configured: ``study.progress()`` writes per-stage lines although ``submit`` (quiet by
    default) keeps a warnings-only console open for the study; ``run()`` ends with the tasks
    line also when it reused every task. (Last in this module: the session's workers are warm.)"""
    log = tmp_path / "stderr.log"
    with open(log, "w") as err:
        proc = subprocess.run([sys.executable, "-c", SCRIPT, repr(LINES), client.scheduler.address,
                               str(tmp_path / "run")], stdout=subprocess.DEVNULL, stderr=err, timeout=120, check=False)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    lines = text.splitlines()
    # the last line per stage once the study ended (a file gets plain lines: no carriage returns)
    assert "  [slow] done 2/2 · running 0 · pending 0 · reused 0 · ran 2 · " in text
    assert any(line.startswith("  [after] done 1/1 · running 0 · pending 0 · reused 0 · ran 1 · ") for line in lines)
    assert "\r" not in text
    assert lines[-1].startswith("compressflow: study 'lines' done: tasks: reused 3, ran 0; results in ")
