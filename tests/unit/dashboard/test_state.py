"""The dashboard's state from synthetic events: counts per state, kWh and gCO₂ per stage,
the scatter and the per-epoch curves, several studies on one scheduler."""

from __future__ import annotations

import json
import math

import pytest

from compressflow.dashboard._page import COLUMNS, payload, rows
from compressflow.dashboard._state import Board
from compressflow.engine.events import PROGRESS, STUDY, TASK
from compressflow.engine.node import dask_key

PUE, INTENSITY = 1.5, 400.0


def study(board: Board, sid: str = "s1", **extra) -> None:
    board.log_event(STUDY, {
        "study": sid, "name": "demo", "out": "/runs/demo", "pue": PUE, "intensity_g_per_kwh": INTENSITY,
        "stages": {"teacher": ["a", "b", "c"], "kd": ["d", "e", "f"]},
        "reused": {"c": {"status": "ok", "energy_kwh": 0.5, "accuracy": 0.9, "val_accuracy": 0.85}}, **extra})


def task(board: Board, key: str, stage: str, event: str, sid: str = "s1", **fields) -> None:
    board.log_event(TASK, {"study": sid, "key": key, "stage": stage, "op": "train", "event": event,
                           "worker": "tcp://w1", **fields})


def progress(board: Board, key: str, epoch: int, acc: float, kwh: float, sid: str = "s1") -> None:
    board.log_event(PROGRESS, {"study": sid, "key": key, "stage": "teacher", "epoch": epoch, "of": 3, "loss": 1.0,
                               "val_accuracy": acc, "energy_kwh": kwh})


@pytest.fixture
def board() -> Board:
    b = Board()
    study(b)
    task(b, "a", "teacher", "start")
    progress(b, "a", 1, 0.5, 0.04)
    task(b, "a", "teacher", "end", status="ok", energy_kwh=0.1, accuracy=0.8, val_accuracy=0.75, duration_s=3.0)
    task(b, "b", "teacher", "start")
    progress(b, "b", 1, 0.4, 0.02)
    progress(b, "b", 2, 0.6, 0.05)
    task(b, "d", "kd", "end", status="failed", energy_kwh=0.02, accuracy=math.nan, val_accuracy=math.nan)
    task(b, "e", "kd", "end", status="cancelled", energy_kwh=0.01, accuracy=math.nan, val_accuracy=0.3)
    return b


def table(snapshot) -> dict:
    return {row["stage"]: row for row in snapshot["table"]}


def test_tasks_per_state_and_live_energy_per_stage(board):
    snap = board.snapshot()
    t = table(snap)
    assert snap["stages"] == ["teacher", "kd"] and snap["study"] == "s1"
    assert {s: t["teacher"][s] for s in ("tasks", "pending", "running", "ok", "failed", "cancelled", "reused")} == \
        {"tasks": 3, "pending": 0, "running": 1, "ok": 1, "failed": 0, "cancelled": 0, "reused": 1}
    assert {s: t["kd"][s] for s in ("pending", "running", "ok", "failed", "cancelled", "reused")} == \
        {"pending": 1, "running": 0, "ok": 0, "failed": 1, "cancelled": 1, "reused": 0}
    # what ran here: a's 0.1 kWh and b's 0.05 so far; c's 0.5 was spent by an earlier run
    assert t["teacher"]["kwh"] == pytest.approx(0.15) and t["teacher"]["reused_kwh"] == pytest.approx(0.5)
    assert t["teacher"]["co2_g"] == pytest.approx(0.15 * PUE * INTENSITY)
    assert t["kd"]["kwh"] == pytest.approx(0.03) and t["kd"]["co2_g"] == pytest.approx(0.03 * 600)


def test_energy_accumulates_with_every_epoch(board):
    progress(board, "b", 3, 0.7, 0.09)
    assert table(board.snapshot())["teacher"]["kwh"] == pytest.approx(0.19)
    task(board, "b", "teacher", "end", status="ok", energy_kwh=0.1, accuracy=0.82, val_accuracy=0.7)
    t = table(board.snapshot())["teacher"]
    assert (t["running"], t["ok"], t["kwh"]) == (0, 2, pytest.approx(0.2))


def test_scatter_has_finished_tasks_with_an_accuracy(board):
    points = {p["key"]: p for p in board.snapshot()["scatter"]}
    assert set(points) == {"a", "c"}  # b runs, d failed, e was cancelled
    assert points["a"]["accuracy"] == 0.8 and points["a"]["co2_g"] == pytest.approx(0.1 * 600)
    assert points["c"]["reused"] and points["c"]["co2_g"] == pytest.approx(0.5 * 600)


def test_curves_of_running_tasks_first_and_a_resumed_task_restarts_its_epochs(board):
    curves = board.snapshot()["curves"]
    assert [(c["key"], c["running"]) for c in curves] == [("b", True), ("a", False)]
    assert curves[0]["epoch"] == [1, 2] and curves[0]["val_accuracy"] == [0.4, 0.6] and curves[0]["kwh"] == [0.02, 0.05]
    progress(board, "b", 2, 0.65, 0.06)  # resumed from a checkpoint after epoch 1: epoch 2 again
    b = board.snapshot()["curves"][0]
    assert b["epoch"] == [1, 2] and b["val_accuracy"] == [0.4, 0.65]


def test_a_task_ending_without_an_event_takes_its_upstreams_state(board):
    # Dask's transitions name tasks by their Dask keys: the task key and the study
    board.settled(dask_key("f", "s1"), erred=False, upstream=[dask_key("d", "s1")])  # d failed: f returned at once
    assert table(board.snapshot())["kd"]["failed"] == 2
    board.log_event(STUDY, {"study": "s2", "name": "x", "stages": {"s": ["g", "h", "i"]}, "pue": 1,
                            "intensity_g_per_kwh": 1})
    task(board, "g", "s", "end", sid="s2", status="cancelled", energy_kwh=0.0)
    board.settled(dask_key("h", "s2"), erred=False, upstream=[dask_key("g", "s2")])
    board.settled(dask_key("i", "s2"), erred=True, upstream=[])  # Dask gave up on it (its workers kept dying)
    assert {k: v for k, v in table(board.snapshot("s2"))["s"].items() if k in ("ok", "failed", "cancelled")} == \
        {"ok": 0, "failed": 1, "cancelled": 2}
    assert not board.open(dask_key("h", "s2")) and not board.open("zzz") and board.open(dask_key("b", "s1"))
    assert not board.open("b") and not board.open(dask_key("b", "s2"))  # a task key alone, another study's key


def test_upstream_failed_status_counts_as_failed():
    b = Board()
    study(b)
    task(b, "d", "kd", "end", status="upstream_failed", energy_kwh=math.nan)
    row = table(b.snapshot())["kd"]
    assert (row["failed"], row["kwh"]) == (1, 0.0)


def test_several_studies_apart_by_id_even_with_the_same_tasks(board):
    study(board, "s2", name="again")  # the same spec submitted again: the same task keys
    task(board, "f", "kd", "start", sid="s2")
    progress(board, "b", 3, 0.9, 0.5, sid="s2")  # s2's own b, which s2 runs too
    assert board.snapshot()["study"] == "s2"  # the latest by default
    s1, s2 = table(board.snapshot("s1")), table(board.snapshot("s2"))
    assert (s2["kd"]["running"], s2["teacher"]["running"], s2["teacher"]["kwh"]) == (1, 1, 0.5)
    assert (s1["kd"]["running"], s1["kd"]["pending"], s1["teacher"]["kwh"]) == (0, 1, pytest.approx(0.15))  # untouched
    assert s1["teacher"]["ok"] == 1 and s2["teacher"]["ok"] == 0
    assert [s["study"] for s in board.snapshot()["studies"]] == ["s1", "s2"]
    assert board.snapshot("nope")["study"] is None and board.snapshot("nope")["table"] == []
    small = Board(keep=2)
    for sid in ("x1", "x2", "x3"):
        study(small, sid)
    assert list(small.studies) == ["x2", "x3"]


def test_payload_is_strict_json_and_the_table_text_has_three_digits(board):
    data = payload(board.snapshot())
    text = json.dumps(data, allow_nan=False)  # NaN accuracies went to null
    assert json.loads(text)["sources"]["cf-states"]["ok"] == [1, 0]
    assert data["sources"]["cf-energy"]["kwh"] == [pytest.approx(0.15), pytest.approx(0.03)]
    header = [name for name, _ in COLUMNS]
    teacher = dict(zip(header, rows(board.snapshot())[0]))
    assert teacher["stage"] == "teacher" and teacher["kwh"] == "0.15" and teacher["co2_g"] == "90"
    empty = payload(Board().snapshot())
    assert empty["factors"] == ["(no study yet)"] and empty["rows"] == []


def test_events_of_other_topics_or_shapes_are_ignored(board):
    before = board.snapshot()
    board.log_event(TASK, ["not", "a", "dict"])
    board.log_event(TASK, {"key": "unknown", "event": "end", "status": "ok"})
    board.log_event("something-else", {"key": "a"})
    assert board.snapshot()["table"] == before["table"]
