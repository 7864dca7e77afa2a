"""Per-stage status (compressflow.engine.status) from a hand-built run directory: records, attempt
logs, a held or free lock, a hand-edited record, no run directory, and the rendered rows."""

from __future__ import annotations

import fcntl
import math
import os
from datetime import datetime

import pytest

from compressflow.engine.status import StageStatus, StatusTable, format_status, status_from_rundir, status_html, total
from compressflow.rundir import RunDir, RunState
from tests.support import tiny_spec

START = "2026-01-01T00:00:00+00:00"

T = datetime.fromisoformat(START).timestamp()  # the latest run's start


def seven_seeds() -> dict:
    spec = tiny_spec()
    spec["stages"]["teacher"]["sweep"] = {"seed": list(range(7))}
    return spec


def keys(spec: dict) -> dict[tuple[str, int], str]:
    from compressflow import load_spec
    from compressflow.engine.graph import expand

    return {(n.stage, n.point["seed"]): n.key for nodes in expand(load_spec(spec)).values() for n in nodes}


def write_record(out, key: str, stage: str, end: float, kwh: float) -> None:
    import xarray as xr

    from compressflow.rundir import RunDir
    from compressflow.rundir.records import LedgerEntry, Record

    entry = LedgerEntry(key, stage, "train", {}, status="ok", start=end - 5, end=end,
                        energy={"energy_kwh": kwh, "cpu_kwh": kwh}, attempts=1, workers_tried=["w"],
                        record=Record(xr.Dataset({"accuracy": 0.9})))
    RunDir(out).write_record(entry)


def write_log(out, key: str, *lines: str) -> None:
    (out / "attempts").mkdir(parents=True, exist_ok=True)
    (out / "attempts" / f"{key}.log").write_text("".join(f"{line}\n" for line in lines))


@pytest.fixture
def run_dir(tmp_path):
    """Teacher seeds: 0 reused, 1 ran, 2 open attempt of this run, 3 failed, 4 cancelled,
    5 never started, 6 open attempt of an earlier run (killed); test seed 0 ran, the tests
    below failed/cancelled teachers follow them, the rest pending."""
    spec, out = seven_seeds(), tmp_path / "run"
    k = keys(spec)
    write_record(out, k["teacher", 0], "teacher", T - 100, 0.5)  # an earlier run's: reused, its energy still counts
    write_record(out, k["teacher", 1], "teacher", T + 10, 0.002)
    write_log(out, k["teacher", 2], f"w {T + 1:.3f} start a2", f"w {T + 5:.3f} energy a2 0.001 0.0005 nan")
    write_log(out, k["teacher", 3], f"w {T + 1:.3f} start a3", f"w {T + 4:.3f} end a3 failed 0.0001 0.0 0.0")
    write_log(out, k["teacher", 4], f"w {T + 1:.3f} start a4", f"w {T + 4:.3f} end a4 cancelled 0.0002 0.0 0.0")
    write_log(out, k["teacher", 6], f"w {T - 50:.3f} start a6", f"w {T - 40:.3f} energy a6 0.7 0.0 0.0")
    write_record(out, k["test", 0], "test", T + 20, 0.0003)
    (out / ".lock").write_text(f"pid 4242 on host elsewhere, started {START}\n")
    return spec, out


def rows_by_stage(rows: list[StageStatus]) -> dict[str, StageStatus]:
    return {r.stage: r for r in rows}


def test_status_of_a_run_directory_while_its_run_is_live(run_dir):
    spec, out = run_dir
    fh = open(out / ".lock", "a+")  # another open file: conflicts as another process's lock would
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert RunDir(out).state() == RunState(True, T, f"pid 4242 on host elsewhere, started {START}")
        rows = rows_by_stage(status_from_rundir(spec, out))
    finally:
        fh.close()
    teacher, test = rows["teacher"], rows["test"]
    assert (teacher.tasks, teacher.reused, teacher.ran, teacher.running, teacher.pending, teacher.failed,
            teacher.cancelled) == (7, 1, 1, 1, 2, 1, 1)
    # the energy of the results: the reused record's too, and this run's attempts of the others
    assert teacher.energy_kwh == pytest.approx(0.5 + 0.002 + 0.0015 + 0.0001 + 0.0002)
    # downstream of the failed teacher: upstream_failed (counted as failed); of the cancelled one: cancelled
    assert (test.tasks, test.reused, test.ran, test.running, test.pending, test.failed, test.cancelled) == (7, 0, 1, 0, 4, 1, 1)
    assert test.energy_kwh == pytest.approx(0.0003)


def test_status_of_a_run_directory_without_a_live_run(run_dir):
    spec, out = run_dir
    assert not RunDir(out).state().live
    teacher = rows_by_stage(status_from_rundir(spec, out))["teacher"]
    # the open attempt of this run was killed with it: pending, its energy still counted
    assert (teacher.running, teacher.pending, teacher.failed, teacher.cancelled) == (0, 3, 1, 1)
    assert teacher.energy_kwh == pytest.approx(0.5 + 0.0038)


def test_a_record_edited_by_hand_is_not_finished(run_dir):
    spec, out = run_dir
    k = keys(spec)
    path = out / "records" / f"{k['teacher', 1]}.json"
    path.write_text(path.read_text().replace("0.002", "0.003"))
    teacher = rows_by_stage(status_from_rundir(spec, out))["teacher"]
    assert (teacher.ran, teacher.pending) == (0, 4)


def test_lock_mtime_refines_the_start_within_its_second(run_dir):
    spec, out = run_dir
    os.utime(out / ".lock", (T + 0.75, T + 0.75))
    assert RunDir(out).state().started == T + 0.75
    os.utime(out / ".lock", (T + 3600, T + 3600))  # a copied run directory: the line's time stands
    assert RunDir(out).state().started == T


def test_no_run_directory_is_all_pending(tmp_path):
    rows = status_from_rundir(seven_seeds(), tmp_path / "nothing")
    assert [(r.stage, r.tasks, r.pending, r.ran, r.energy_kwh) for r in rows] == [
        ("teacher", 7, 7, 0, 0.0), ("test", 7, 7, 0, 0.0)]
    assert not (tmp_path / "nothing").exists()  # reading never creates it


def test_rows_tables_and_counts():
    row = StageStatus.from_counts("kd", {"reused": 2, "ok": 1, "upstream_failed": 1, "failed": 1}, 0.25)
    assert (row.tasks, row.reused, row.ran, row.failed, row.finished) == (5, 2, 1, 2, 3)
    with pytest.raises(ValueError, match="unknown task state 'done'; valid states: reused, ran"):
        StageStatus.from_counts("kd", {"done": 1})
    rows = [StageStatus("teacher", 1, ran=1, energy_kwh=1e-3), row, StageStatus("x", 1, pending=1, energy_kwh=math.nan)]
    assert total(rows) == StageStatus("total", 7, reused=2, ran=2, pending=1, failed=2, energy_kwh=0.251)
    lines = format_status(rows).splitlines()
    assert lines[0].split() == ["stage", "tasks", "reused", "ran", "running", "pending", "failed", "cancelled", "kWh"]
    assert lines[2].split() == ["kd", "5", "2", "1", "0", "0", "2", "0", "0.25"]
    assert lines[-1].split() == ["total", "7", "2", "2", "0", "1", "2", "0", "0.251"]
    assert len({len(line) for line in lines}) == 1  # numbers right-aligned: every line ends in one column
    page = status_html([StageStatus("<b>&", 1, ran=1)])
    assert "<td>&lt;b&gt;&amp;</td>" in page and page.count("<tr>") == 3 and "<tfoot><tr><th>total</th>" in page


def test_a_record_that_is_a_fifo_is_read_at_once_as_not_finished(run_dir):
    from tests.support.special_files import make_special, promptly

    spec, out = run_dir
    make_special(out / "records" / f"{keys(spec)['teacher', 1]}.json", "fifo")
    teacher = rows_by_stage(promptly(lambda: status_from_rundir(spec, out)))["teacher"]
    assert (teacher.ran, teacher.reused, teacher.pending) == (0, 1, 4)


def test_records_of_a_run_directory_without_its_key_are_not_finished(run_dir):
    spec, out = run_dir
    (out / ".secret").unlink()  # as a run directory of an earlier version: records with a plain sha256
    rows = rows_by_stage(status_from_rundir(spec, out))
    assert [(r.ran, r.reused) for r in rows.values()] == [(0, 0), (0, 0)]


def test_status_prints_as_the_table_of_compressflow_status(run_dir):
    spec, out = run_dir
    rows = status_from_rundir(spec, out)
    assert isinstance(rows, StatusTable) and isinstance(rows, list) and len(rows) == 2
    assert repr(rows) == str(rows) == format_status(list(rows))  # print(study.status()): the table, no StageStatus(...)
    assert repr(rows).splitlines()[1].split()[:3] == ["teacher", "7", "1"]
    assert rows._repr_html_() == status_html(list(rows))
    assert rows.total == total(rows) and rows.total.tasks == 14
    assert StatusTable() == [] and repr(StatusTable()).splitlines()[1].split()[:2] == ["total", "0"]


def test_live_status_counts_reused_energy_and_cancelled_stages_at_once():
    """A live study: the reused teacher's recorded kWh counts; after cancel("teacher") its tasks
    not started, and the tests downstream of them, show cancelled before their futures end."""
    from compressflow import load_spec
    from compressflow.engine.graph import TaskGraph, expand
    from compressflow.engine.status import status_of_graph
    from compressflow.rundir.records import LedgerEntry

    spec = load_spec(seven_seeds())
    stages = expand(spec)
    k = keys(seven_seeds())
    reused = {k["teacher", 0]: LedgerEntry(k["teacher", 0], "teacher", "train", {}, status="ok",
                                           energy={"energy_kwh": 0.5})}
    graph = TaskGraph(spec, stages, {}, reused)
    done = {k["teacher", 1]: LedgerEntry(k["teacher", 1], "teacher", "train", {}, status="ok",
                                         energy={"energy_kwh": 0.25})}
    running = {k["teacher", 2], k["test", 0]}
    before = {r.stage: r for r in status_of_graph(graph, done, running)}
    assert (before["teacher"].reused, before["teacher"].ran, before["teacher"].running, before["teacher"].pending,
            before["teacher"].energy_kwh) == (1, 1, 1, 4, 0.75)
    after = status_of_graph(graph, done, running, cancelled=["teacher"])
    assert isinstance(after, StatusTable)
    teacher, test = after
    assert (teacher.running, teacher.pending, teacher.cancelled) == (1, 0, 4)
    # tests of teachers 3-6 (not started, cancelled) will not run; those of 0-2 may
    assert (test.running, test.pending, test.cancelled) == (1, 2, 4)
