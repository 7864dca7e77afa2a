"""Resume: a run interrupted with Ctrl-C (SIGINT to the CLI) or terminated (SIGTERM, as SLURM,
systemd and ``timeout`` send) keeps every finished task's record; re-running the same spec into
the same directory recomputes none of them and gives the same results as an uninterrupted run;
bad records rerun with a warning, moved run directories use their own files."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest

import compressflow
from compressflow.cli import main
from compressflow.rundir.attempts import parse_attempts
from tests.support import tiny_spec
from tests.support.interrupt import interrupt_run
from tests.support.records import edit_record

SPEC = {"name": "resume", "stages": {"w": {"op": "wait", "params": {"seconds": 0.6},
                                           "sweep": {"label": list(range(10))}}}}


def _starts(out, key) -> int:
    """How many times the task ``key`` was started (its attempt log)."""
    return len(parse_attempts((out / "attempts" / f"{key}.log").read_text().splitlines()))


@pytest.mark.slow
def test_interrupted_run_resumes_without_recomputing(client, tmp_path):
    # Ctrl-C in a terminal signals the whole process group: the embedded cluster's workers get
    # it too and must leave it to the client (before, they died with KeyboardInterrupt tracebacks)
    proc, out = interrupt_run(SPEC, tmp_path, signal.SIGINT, records=3, group=True)
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    # its closed workers exit before their nannies give up on them (compressflow.engine.worker_exit)
    assert "Worker process still alive" not in proc.stderr
    records = out / "records"
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


@pytest.mark.slow
def test_sigterm_is_a_first_ctrl_c_that_exits_143(client, tmp_path, capsys):
    """SIGTERM cancels, waits for the running tasks' next check, writes what finished (results
    and ledger) and exits 143 with one line; the next run reuses the finished tasks. (Sent to a
    whole process group, as ``timeout``, systemd and SLURM do, it reaches an embedded cluster's
    workers too: they ignore SIGTERM as they ignore the Ctrl-C of the test above.)"""
    spec = {"name": "term", "stages": {"w": {"op": "wait", "params": {"seconds": 1.0},
                                             "sweep": {"label": [0, 1, 2, 3]}}}}
    proc, out = interrupt_run(spec, tmp_path, signal.SIGTERM, args=("--cluster", client.scheduler.address))
    assert proc.returncode == 143, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1] == (
        "compressflow: terminated (SIGTERM); finished tasks are kept under the run directory's records/ and are "
        "reused when you run the same spec with the same --out")
    finished = {p.stem for p in out.glob("records/*.json")}
    ledger = compressflow.open_results(out)["tasks"].to_dataset()
    status = dict(zip(ledger.task.values.tolist(), ledger.status.values.tolist()))
    assert 1 <= len(finished) < 4 and len(status) == 4
    assert {k for k, s in status.items() if s == "ok"} == finished
    assert set(status.values()) == {"ok", "cancelled"}
    assert main(["run", str(tmp_path / "spec.yaml"), "--out", str(out), "--quiet",
                 "--cluster", client.scheduler.address]) == 0
    assert f"tasks: reused {len(finished)}, ran {4 - len(finished)}" in capsys.readouterr().out.splitlines()


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


def _keys(tree, stage):
    return [str(k) for k in np.atleast_1d(tree[stage].to_dataset().task_key.values)]


def test_bad_records_are_not_reused_their_tasks_run_again_with_a_warning(client, tmp_path, capsys):
    spec = tiny_spec(sweep={"seed": [0, 1]})
    first = compressflow.run(spec, cluster=client, out=tmp_path, show_progress=False)
    teacher0, teacher1 = _keys(first, "teacher")
    test0, test1 = _keys(first, "test")
    records = tmp_path / "records"
    # 'ok' with no record: reused before, and the downstream task that must run crashed on it
    edit_record(records / f"{teacher0}.json", lambda d: d.pop("record"))
    (records / f"{test0}.json").unlink()
    # a key that is not the file's: crashed the results build
    edit_record(records / f"{teacher1}.json", lambda d: d.update(key=teacher0))
    # a NaN accuracy: reported as the result
    edit_record(records / f"{test1}.json",
          lambda d: d["record"]["metrics"]["data_vars"]["accuracy"].update(data=float("nan")))
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


def test_plan_resume_reads_each_record_once_and_rejects_bad_ones(client, tmp_path, monkeypatch):
    from compressflow.engine.graph import expand
    from compressflow.engine.resume import plan_resume
    from compressflow.rundir import RunDir, records
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
