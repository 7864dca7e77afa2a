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
import pytest
import yaml

import compressflow
from compressflow.rundir.attempts import parse_attempts
from tests.support import tiny_spec

SPEC = {"name": "resume", "stages": {"w": {"op": "wait", "params": {"seconds": 0.6},
                                           "sweep": {"label": list(range(10))}}}}


def _starts(out, key) -> int:
    """How many times the task ``key`` was started (its attempt log)."""
    return len(parse_attempts((out / "attempts" / f"{key}.log").read_text().splitlines()))


@pytest.mark.slow
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
        assert _starts(out, key) == 1
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
    assert _starts(tmp_path, reused) == 1  # not recomputed


# -- a persisted record is trusted only when it is what compressflow wrote -------------------

def _finished_record(out, key="train-abc", accuracy=0.9):
    """A record as ``execute_task`` persists it, with a real artifact file under ``out``."""
    import xarray as xr

    from compressflow.rundir.records import Artifact, Record, LedgerEntry
    from compressflow.rundir.files import atomic_write_bytes, sha256_file

    art_path = out / "artifacts" / f"{key}.pt"
    atomic_write_bytes(art_path, b"weights")
    metrics = xr.Dataset({"accuracy": accuracy, "val_accuracy_curve": ("epoch", [0.5, 0.8])})
    task = LedgerEntry(key, "teacher", "train", {"seed": 0}, status="ok", worker="w", start=1.0, end=2.0,
                      energy={"energy_kwh": 1e-5, "cpu_kwh": 1e-5, "gpu_kwh": 0.0, "ram_kwh": 0.0, "method": "x"},
                      attempts=1, workers_tried=["w"],
                      record=Record(metrics, Artifact("checkpoint", str(art_path), sha256_file(art_path), {})))
    path = out / "records" / f"{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(task.to_json(root=out))
    return path


def _edit(path, fn, keep_digest=False):
    data = json.loads(path.read_text())
    if not keep_digest:
        data.pop("digest")  # as a record of an earlier version (no digest): the specific check must catch it
    fn(data)
    path.write_text(json.dumps(data))


BAD_RECORDS = [
    ("ok without a record", lambda d: d.pop("record"), r"^has status 'ok' but no record of metrics$"),
    ("key is not the file's", lambda d: d.update(key="train-other"),
     r"^key 'train-other' does not match its file name 'train-abc\.json'$"),
    ("NaN accuracy", lambda d: d["record"]["metrics"]["data_vars"]["accuracy"].update(data=float("nan")),
     r"^accuracy = nan is not finite$"),
    ("accuracy above 1", lambda d: d["record"]["metrics"]["data_vars"]["accuracy"].update(data=1.7),
     r"^accuracy = 1\.7 is outside \[0, 1\]$"),
    ("curve below 0", lambda d: d["record"]["metrics"]["data_vars"]["val_accuracy_curve"].update(data=[0.5, -0.1]),
     r"^val_accuracy_curve = \[0\.5, -0\.1\] is outside \[0, 1\]$"),
    ("accuracy as text", lambda d: d["record"]["metrics"]["data_vars"]["accuracy"].update(data="0.9"),
     r"^accuracy = '0\.9' is not a number$"),
    ("missing field", lambda d: d.pop("status"), r"^has no 'status' field$"),
    ("wrong type", lambda d: d.update(attempts="1"), r"^field 'attempts' = '1' is not an integer$"),
    ("unknown status", lambda d: d.update(status="done"), r"^status 'done' is not one of ok, failed, upstream_failed$"),
    ("unknown field", lambda d: d.update(extra=1), r"^has unknown field\(s\) 'extra'$"),
    ("negative energy", lambda d: d["energy"].update(cpu_kwh=-1.0), r"^energy cpu_kwh = -1\.0 is not a finite number"),
    ("artifact without hash", lambda d: d["record"]["artifact"].pop("sha256"),
     r"^field 'record\.artifact' is not \{kind, path, sha256, meta\}$"),
    ("metrics garbage", lambda d: d["record"].update(metrics={"data_vars": 3}), r"^cannot be parsed"),
]


@pytest.mark.parametrize("fn, match", [(f, m) for _, f, m in BAD_RECORDS], ids=[i for i, _, _ in BAD_RECORDS])
def test_a_bad_record_is_refused_with_its_reason(tmp_path, fn, match):
    from compressflow.rundir import RunDir
    from compressflow.rundir.records import RecordError, read_record

    path = _finished_record(tmp_path)
    assert read_record(path).ok  # intact, as written
    _edit(path, fn)
    with pytest.raises(RecordError, match=match):
        read_record(path)
    assert RunDir(path.parent.parent).finished(path.stem) is None  # not reused: the task runs again


def test_a_hand_edited_plausible_accuracy_is_caught_by_the_digest(tmp_path):
    from compressflow.rundir.records import RecordError, read_record

    path = _finished_record(tmp_path, accuracy=0.9)
    _edit(path, lambda d: d["record"]["metrics"]["data_vars"]["accuracy"].update(data=0.99), keep_digest=True)
    with pytest.raises(RecordError, match=r"^content does not match its digest \(edited by hand or torn\)$"):
        read_record(path)


def test_torn_or_missing_artifact_and_torn_json(tmp_path):
    from compressflow.rundir.records import RecordError, read_record

    path = _finished_record(tmp_path)
    art = tmp_path / "artifacts" / "train-abc.pt"
    art.write_bytes(b"weightz")
    assert read_record(path, check_hash=False).ok  # the worker's cheap check: present is enough
    with pytest.raises(RecordError, match=r"^checkpoint '.*train-abc\.pt' does not match its recorded sha256"):
        read_record(path)
    art.unlink()
    with pytest.raises(RecordError, match=r"^checkpoint '.*train-abc\.pt' is missing$"):
        read_record(path, check_hash=False)
    path.write_text(path.read_text()[:40])
    with pytest.raises(RecordError, match=r"^is not JSON"):
        read_record(path)
    path.write_text("[" * 100000)
    with pytest.raises(RecordError, match=r"^is not JSON"):
        read_record(path)


def test_artifact_paths_are_stored_relative_to_the_run_directory(tmp_path):
    from compressflow.rundir.records import read_record

    path = _finished_record(tmp_path)
    stored = json.loads(path.read_text())["record"]["artifact"]["path"]
    assert stored == "artifacts/train-abc.pt"
    moved = tmp_path.parent / f"{tmp_path.name}-moved"
    tmp_path.rename(moved)
    rec = read_record(moved / "records" / "train-abc.json")
    assert rec.record.artifact.path == str(moved / "artifacts" / "train-abc.pt")


def _keys(tree, stage):
    return [str(k) for k in np.atleast_1d(tree[stage].to_dataset().task_key.values)]


def test_bad_records_are_not_reused_their_tasks_run_again_with_a_warning(client, tmp_path, capsys):
    spec = tiny_spec(sweep={"seed": [0, 1]})
    first = compressflow.run(spec, cluster=client, out=tmp_path, show_progress=False)
    teacher0, teacher1 = _keys(first, "teacher")
    test0, test1 = _keys(first, "test")
    records = tmp_path / "records"
    # 'ok' with no record: reused before, and the downstream task that must run crashed on it
    _edit(records / f"{teacher0}.json", lambda d: d.pop("record"), keep_digest=True)
    (records / f"{test0}.json").unlink()
    # a key that is not the file's: crashed the results build
    _edit(records / f"{teacher1}.json", lambda d: d.update(key=teacher0), keep_digest=True)
    # a NaN accuracy: reported as the result
    _edit(records / f"{test1}.json",
          lambda d: d["record"]["metrics"]["data_vars"]["accuracy"].update(data=float("nan")), keep_digest=True)
    capsys.readouterr()
    tree = compressflow.run(spec, cluster=client, out=tmp_path, show_progress=False)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning: record" in line]
    assert len(warnings) == 3, warnings  # printed once per bad record, by the client
    for key, why in ((teacher0, "has status 'ok' but no record of metrics"),
                     (teacher1, f"key '{teacher0}' does not match its file name '{teacher1}.json'"),
                     (test1, "accuracy = nan is not finite")):
        (line,) = [w for w in warnings if f"{key}.json" in w]
        assert why in line and "the task runs again" in line
        assert (tmp_path / "rejected" / key / f"{key}.json").is_file()  # the bad record is kept, not deleted
        assert why in (tmp_path / "rejected" / key / "why.txt").read_text()
    ledger = tree["tasks"].to_dataset()
    assert (ledger.status == "ok").all()
    for key in (teacher0, teacher1, test0, test1):
        assert _starts(tmp_path, key) == 2  # ran again
    # the re-run tasks give what the first run gave (same seeds, same data)
    np.testing.assert_allclose(tree["test"]["accuracy"].values, first["test"]["accuracy"].values)
    assert np.isfinite(tree["test"]["accuracy"].values).all()


def test_moved_and_copied_run_directories_use_their_own_files(client, tmp_path, capsys):
    import shutil

    from compressflow.rundir.records import read_record

    spec = tiny_spec()
    first = compressflow.run(spec, cluster=client, out=tmp_path / "a", show_progress=False)
    (teacher,), (test,) = _keys(first, "teacher"), _keys(first, "test")
    shutil.copytree(tmp_path / "a", tmp_path / "copy")
    (tmp_path / "a").rename(tmp_path / "moved")
    capsys.readouterr()
    moved = compressflow.run(spec, cluster=client, out=tmp_path / "moved", show_progress=False)
    assert "warning" not in capsys.readouterr().err  # nothing "missing"
    np.testing.assert_array_equal(moved["tasks"]["start"].values, first["tasks"]["start"].values)  # all reused
    assert _starts(tmp_path / "moved", teacher) == _starts(tmp_path / "moved", test) == 1
    # the copy must read its own checkpoint, not the original's: tear the original's, and make
    # the copy's evaluation run again so that it has to load the teacher's checkpoint
    for ckpt in (tmp_path / "moved" / "artifacts").glob("*.pt"):
        ckpt.write_bytes(b"torn")
    (tmp_path / "copy" / "records" / f"{test}.json").unlink()
    copy = compressflow.run(spec, cluster=client, out=tmp_path / "copy", show_progress=False)
    assert "warning" not in capsys.readouterr().err
    assert (copy["tasks"]["status"] == "ok").all()
    assert _starts(tmp_path / "copy", teacher) == 1 and _starts(tmp_path / "copy", test) == 2
    assert float(copy["test"]["accuracy"]) == float(first["test"]["accuracy"])
    used = read_record(tmp_path / "copy" / "records" / f"{teacher}.json").record.artifact.path
    assert used == str((tmp_path / "copy" / "artifacts" / f"{teacher}.pt").resolve())


# -- the resume plan: records are read once, on the client ----------------------------------

def test_reused_tasks_are_not_submitted_and_their_records_go_downstream_as_they_are(tmp_path):
    from compressflow.engine.graph import build_graph, expand
    from compressflow.rundir.records import Artifact, Record, LedgerEntry
    from compressflow.spec import load_spec

    import xarray as xr

    spec = load_spec(tiny_spec())
    stages = expand(spec)
    (teacher,), (test,) = stages["teacher"], stages["test"]
    done = LedgerEntry(teacher.key, "teacher", "train", {}, status="ok",
                      record=Record(xr.Dataset({"accuracy": 0.9}), Artifact("checkpoint", str(tmp_path / "t.pt"), "0" * 64)))
    graph = build_graph(spec, tmp_path, {teacher.key: done}, stages=stages)
    assert list(graph.delayed) == [test.key] and graph.reused == {teacher.key: done}
    task_graph = dict(graph.delayed[test.key].dask)
    assert teacher.key not in task_graph  # nothing upstream to compute: the record is an argument
    args = task_graph[test.key].args if hasattr(task_graph[test.key], "args") else task_graph[test.key][1:]
    assert any(getattr(a, "value", a) is done for a in args)


def test_plan_resume_reads_each_record_once_and_rejects_bad_ones(client, tmp_path, monkeypatch):
    from compressflow.engine.graph import expand
    from compressflow.rundir import records
    from compressflow.engine.resume import plan_resume
    from compressflow.rundir import RunDir
    from compressflow.spec import load_spec

    spec = {"name": "plan", "stages": {"w": {"op": "wait", "sweep": {"label": [0, 1, 2]}}}}
    compressflow.run(spec, cluster=client, out=tmp_path, show_progress=False)
    nodes = expand(load_spec(spec))["w"]
    run = RunDir(tmp_path)
    run.record(nodes[1].key).write_text("{torn")
    reads = []
    real = records.read_record
    monkeypatch.setattr("compressflow.rundir.read_record", lambda p, *a, **k: reads.append(p) or real(p, *a, **k))
    plan = plan_resume(nodes + nodes, run)  # a key reached twice is still read once
    assert sorted(plan) == sorted([nodes[0].key, nodes[2].key]) and len(reads) == 3
    assert (tmp_path / "rejected" / nodes[1].key / "why.txt").read_text().startswith("is not JSON")
    assert not run.record(nodes[1].key).exists()
