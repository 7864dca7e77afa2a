"""Planning a resume from a hand-built run directory: a bad record is refused with its reason (a
hand-edited accuracy included), torn files and missing artifacts, relative artifact paths, and
reused tasks going downstream unsubmitted; an untrusted record (no run directory key, a FIFO) moved
aside by the resume plan with why.txt."""

from __future__ import annotations

import json
import os
import re

import pytest

from tests.support import tiny_spec
from tests.support.records import edit_record, finished_record
from tests.support.special_files import make_special, promptly

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

    path = finished_record(tmp_path)
    assert read_record(path).ok  # intact, as written
    edit_record(path, fn)
    with pytest.raises(RecordError, match=match):
        read_record(path)
    assert RunDir(path.parent.parent).finished(path.stem) is None  # not reused: the task runs again


def test_a_hand_edited_plausible_accuracy_is_caught_by_the_digest(tmp_path):
    from compressflow.rundir.records import RecordError, read_record

    path = finished_record(tmp_path, accuracy=0.9)
    edit_record(path, lambda d: d["record"]["metrics"]["data_vars"]["accuracy"].update(data=0.99), resign=False)
    with pytest.raises(RecordError, match=r"^content does not match its digest \(edited by hand, torn, or signed in "
                                          r"another run directory\)$"):
        read_record(path)


@pytest.mark.parametrize("spoil, why", [
    (lambda path: (path.parent.parent / ".secret").unlink(),
     r"^cannot be checked: the run directory has no key '.*\.secret' \(records of earlier versions are not trusted\)"),
    (lambda path: make_special(path, "fifo"), r"^is a FIFO, not a regular file$"),
], ids=["no key", "fifo"])
def test_the_resume_plan_moves_an_untrusted_record_aside_and_reruns_its_task(tmp_path, spoil, why):
    from compressflow.engine.graph import expand
    from compressflow.engine.resume import plan_resume
    from compressflow.rundir import RunDir
    from compressflow.spec import load_spec

    stages = expand(load_spec(tiny_spec()))
    (teacher,) = stages["teacher"]
    path = finished_record(tmp_path, key=teacher.key)
    assert plan_resume([teacher], RunDir(tmp_path)).keys() == {teacher.key}  # signed and intact: reused
    spoil(path)
    assert promptly(lambda: plan_resume([teacher], RunDir(tmp_path))) == {}  # the task runs again
    kept = tmp_path / "rejected" / teacher.key
    assert re.search(why, (kept / "why.txt").read_text()) and os.path.lexists(kept / path.name)
    assert not os.path.lexists(path)


def test_torn_or_missing_artifact_and_torn_json(tmp_path):
    from compressflow.rundir.records import RecordError, read_record

    path = finished_record(tmp_path)
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

    path = finished_record(tmp_path)
    stored = json.loads(path.read_text())["record"]["artifact"]["path"]
    assert stored == "artifacts/train-abc.pt"
    moved = tmp_path.parent / f"{tmp_path.name}-moved"
    tmp_path.rename(moved)
    rec = read_record(moved / "records" / "train-abc.json")
    assert rec.record.artifact.path == str(moved / "artifacts" / "train-abc.pt")


def test_reused_tasks_are_not_submitted_and_their_records_go_downstream_as_they_are(tmp_path):
    import xarray as xr

    from compressflow.engine.graph import build_graph, expand
    from compressflow.engine.node import dask_key
    from compressflow.rundir.records import Artifact, LedgerEntry, Record
    from compressflow.spec import load_spec

    spec = load_spec(tiny_spec())
    stages = expand(spec)
    (teacher,), (test,) = stages["teacher"], stages["test"]
    done = LedgerEntry(teacher.key, "teacher", "train", {}, status="ok",
                      record=Record(xr.Dataset({"accuracy": 0.9}), Artifact("checkpoint", str(tmp_path / "t.pt"), "0" * 64)))
    graph = build_graph(spec, tmp_path, {teacher.key: done}, stages=stages)
    assert list(graph.delayed) == [test.key] and graph.reused == {teacher.key: done}
    task_graph = dict(graph.delayed[test.key].dask)
    assert list(task_graph) == [dask_key(test.key, "")]  # nothing upstream to compute: the record is an argument
    (task,) = task_graph.values()
    args = task.args if hasattr(task, "args") else task[1:]
    assert any(getattr(a, "value", a) is done for a in args)
