"""The dashboard page's numbers read from run directories, without a cluster: a finished
study's results store, an interrupted run's records alone, records landing after the store,
and the server that shows several of them side by side."""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.request

import numpy as np
import pytest
import xarray as xr

from compressflow.dashboard._state import Board
from compressflow.dashboard.offline import RunDirBoard, study_view
from compressflow.dashboard.serve import DashboardServer
from compressflow.energy.carbon import carbon_intensity
from compressflow.engine.node import Node
from compressflow.results import build_results, open_results, save_results
from compressflow.rundir import RunDir
from compressflow.rundir.records import LedgerEntry, Record
from compressflow.spec import DataSpec, EnergySpec, PipelineSpec, StageSpec

FRA = carbon_intensity("FRA")


def metrics(accuracy: float, curve: list[float], kwh: list[float]) -> xr.Dataset:
    return xr.Dataset({"accuracy": accuracy, "val_accuracy_curve": ("epoch", curve),
                       "energy_curve_kwh": ("epoch", kwh)}, coords={"epoch": np.arange(1, len(curve) + 1)})


def entry(key: str, stage: str, status: str = "ok", kwh: float = 1e-3, end: float = 2.0, record=None) -> LedgerEntry:
    return LedgerEntry(key, stage, "train", {}, status=status, worker="w", start=end - 1.0, end=end,
                       energy={"energy_kwh": kwh, "country": "FRA"}, attempts=1, workers_tried=["w"],
                       record=Record(record) if record is not None else None)


@pytest.fixture
def store_run(tmp_path):
    """A finished study's run directory with its results store only: a reused teacher and a
    kd sweep of three temperatures (one ok, one failed, one cancelled), PUE 1.2 in France."""
    stage = {"needs": {}, "resources": {}, "scheduling": StageSpec.model_fields["scheduling"].default_factory()}
    spec = PipelineSpec.model_construct(name="finished", data=DataSpec(), energy=EnergySpec(country="FRA", pue=1.2),
                                        stages={"teacher": StageSpec.model_construct(op="train", params={}, sweep={},
                                                                                     **stage),
                                                "kd": StageSpec.model_construct(op="train", params={},
                                                                                sweep={"temperature": [2, 4, 8]},
                                                                                **stage)})
    nodes = {"teacher": [Node("train-t", "teacher", "train", {}, {})],
             "kd": [Node(f"train-k{t}", "kd", "train", {}, {"temperature": t}) for t in (2, 4, 8)]}
    teacher = metrics(0.9, [0.5, 0.7, 0.85], [1e-3, 2e-3, 3e-3])
    tasks = {"train-t": entry("train-t", "teacher", kwh=2e-3, record=teacher),
             "train-k2": entry("train-k2", "kd", kwh=1e-3, end=5.0, record=metrics(0.8, [0.6, 0.75], [5e-4, 1e-3])),
             "train-k4": entry("train-k4", "kd", "failed", kwh=5e-4),
             "train-k8": entry("train-k8", "kd", "cancelled", kwh=1e-4)}
    out = tmp_path / "finished"
    save_results(build_results(spec, nodes, tasks, reused={"train-t"}), out)
    return out


@pytest.fixture
def records_run(tmp_path):
    """An interrupted run: two finished records, no results store yet."""
    out = tmp_path / "interrupted"
    run = RunDir(out)
    run.write_record(entry("train-a", "teacher", kwh=1e-5, end=3.0, record=metrics(0.7, [0.4, 0.6], [5e-6, 1e-5])))
    run.write_record(entry("train-b", "teacher", kwh=2e-5, end=4.0, record=metrics(0.75, [0.5, 0.7], [1e-5, 2e-5])))
    return out


def by_stage(snapshot) -> dict:
    return {row["stage"]: row for row in snapshot["table"]}


def snap(out) -> dict:
    board = Board()
    view = study_view(out, "s")
    board.studies[view.study] = view
    return board.snapshot("s")


def test_a_finished_store_shows_the_ledgers_numbers(store_run):
    data = snap(store_run)
    ledger = open_results(store_run)["tasks"].to_dataset()
    assert data["name"] == "finished" and data["stages"] == ["teacher", "kd"]
    assert data["pue"] == 1.2 and data["intensity_g_per_kwh"] == pytest.approx(FRA)
    t = by_stage(data)
    assert {k: t["teacher"][k] for k in ("tasks", "reused", "ok", "pending")} == \
        {"tasks": 1, "reused": 1, "ok": 0, "pending": 0}
    assert {k: t["kd"][k] for k in ("tasks", "ok", "failed", "cancelled", "reused", "pending")} == \
        {"tasks": 3, "ok": 1, "failed": 1, "cancelled": 1, "reused": 0, "pending": 0}
    for stage in ("teacher", "kd"):  # kWh of what ran, and of what was reused: the ledger's sums
        mine = ledger["stage"].values == stage
        ran, reused = mine & ~ledger["reused"].values, mine & ledger["reused"].values
        assert t[stage]["kwh"] == pytest.approx(ledger["energy_kwh"].values[ran].sum())
        assert t[stage]["co2_g"] == pytest.approx(ledger["co2_g"].values[ran].sum())
        assert t[stage]["reused_kwh"] == pytest.approx(ledger["energy_kwh"].values[reused].sum())
    assert t["kd"]["kwh"] == pytest.approx(1.6e-3) and t["teacher"]["reused_kwh"] == pytest.approx(2e-3)
    points = {p["key"]: p for p in data["scatter"]}
    assert {k: p["accuracy"] for k, p in points.items()} == {"train-t": 0.9, "train-k2": 0.8}
    assert points["train-k2"]["co2_g"] == pytest.approx(float(ledger["co2_g"].sel(task="train-k2")))
    assert points["train-t"]["reused"] and not points["train-k2"]["reused"]
    curves = {c["key"]: c for c in data["curves"]}
    assert curves["train-t"]["val_accuracy"] == [0.5, 0.7, 0.85] and curves["train-t"]["epoch"] == [1, 2, 3]
    assert curves["train-k2"]["val_accuracy"] == [0.6, 0.75] and curves["train-k2"]["kwh"] == [5e-4, 1e-3]


def test_an_interrupted_run_without_a_store_shows_its_records(records_run):
    data = snap(records_run)
    assert data["name"] == "interrupted" and data["stages"] == ["teacher"]
    row = by_stage(data)["teacher"]
    assert (row["tasks"], row["ok"], row["reused"]) == (2, 2, 0)
    assert row["kwh"] == pytest.approx(3e-5)
    # no spec: the records' country and PUE 1
    assert data["pue"] == 1.0 and row["co2_g"] == pytest.approx(3e-5 * FRA)
    assert sorted(p["accuracy"] for p in data["scatter"]) == [0.7, 0.75]
    assert sorted(c["val_accuracy"] for c in data["curves"]) == [[0.4, 0.6], [0.5, 0.7]]


def test_records_landing_are_read_on_the_next_refresh_and_older_ones_count_as_reused(records_run, store_run):
    board = RunDirBoard([records_run, store_run], refresh_s=0.0)
    (records_run / ".lock").write_text("pid 1 on host h, started 2020-01-01T00:00:00+00:00\n")  # a later run
    run = RunDir(records_run)
    run.write_record(entry("train-c", "student", kwh=4e-5, end=time.time(), record=metrics(0.6, [0.6], [4e-5])))
    rows = by_stage(board.snapshot(board.sources[0].study))
    assert (rows["teacher"]["reused"], rows["teacher"]["ok"], rows["teacher"]["reused_kwh"]) == (2, 0,
                                                                                               pytest.approx(3e-5))
    assert (rows["student"]["ok"], rows["student"]["kwh"]) == (1, pytest.approx(4e-5))
    # the store's failed task finished since (a re-run still going), and a stage the store has not
    RunDir(store_run).write_record(entry("train-k4", "kd", kwh=7e-4, end=9.0, record=metrics(0.85, [0.85], [7e-4])))
    RunDir(store_run).write_record(entry("train-x", "extra", kwh=1e-4, end=9.5, record=metrics(0.5, [0.5], [1e-4])))
    data = board.snapshot(board.sources[1].study)
    rows = by_stage(data)
    assert data["stages"] == ["teacher", "kd", "extra"]
    assert (rows["kd"]["ok"], rows["kd"]["failed"], rows["kd"]["kwh"]) == (2, 0, pytest.approx(1e-3 + 7e-4 + 1e-4))
    assert (rows["extra"]["tasks"], rows["extra"]["ok"]) == (1, 1)
    assert {p["key"]: p["accuracy"] for p in data["scatter"]}["train-k4"] == 0.85


def test_a_board_rereads_at_most_every_two_seconds(records_run):
    board = RunDirBoard([records_run])
    RunDir(records_run).write_record(entry("train-c", "teacher", end=5.0, record=metrics(0.6, [0.6], [1e-3])))
    assert by_stage(board.snapshot())["teacher"]["tasks"] == 2  # read at start, not again within 2 s
    board.read_at -= 1.9
    assert by_stage(board.snapshot())["teacher"]["tasks"] == 2
    board.read_at -= 0.2
    assert by_stage(board.snapshot())["teacher"]["tasks"] == 3


def get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.url, r.read().decode()


def test_the_server_shows_several_run_directories_side_by_side(store_run, records_run):
    board = RunDirBoard([str(store_run), str(records_run)])
    server = DashboardServer(board)
    assert server.url == f"http://127.0.0.1:{server.port}/compressflow"
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        status, landed, html = get(f"http://127.0.0.1:{server.port}/")
        first, second = (s.study for s in board.sources)
        assert status == 200 and landed == server.url and "<title>compressflow — run directories</title>" in html
        assert f'href="?study={first}"' in html and f'href="?study={second}"' in html and "Dask status" not in html
        assert 'data-study="' + first + '"' in html  # the first run directory by default
        datas = {}
        for study in (first, second):
            datas[study] = json.loads(get(f"{server.url}/data.json?study={study}")[2])
        assert datas[first]["name"] == "finished" and datas[second]["name"] == "interrupted"
        assert [r[:2] for r in datas[first]["rows"]] == [["teacher", "1"], ["kd", "3"]]
        assert by_stage(datas[second])["teacher"]["kwh"] == pytest.approx(3e-5)
        assert math.isclose(sum(datas[first]["sources"]["cf-energy"]["kwh"]), 1.6e-3)
        status, _, js = get(f"{server.url}/static/js/bokeh.min.js")  # BokehJS from the bokeh package
        assert status == 200 and len(js) > 100_000
    finally:
        server.stop()
        thread.join(10)
    assert not thread.is_alive()


def test_a_port_in_use_is_one_line_naming_it(records_run):
    import socket

    from compressflow.errors import InputError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(InputError, match=rf"^--port: cannot listen on port {port} \(Address already in use\); "
                                             r"choose another, or --port 0 for a free one$"):
            DashboardServer(RunDirBoard([records_run]), port=port)


def test_a_browser_is_opened_only_where_one_can_be_shown(monkeypatch):
    from compressflow.dashboard.serve import can_open_browser

    for name in ("BROWSER", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    assert not can_open_browser()  # over SSH: no text browser taking the terminal
    monkeypatch.setenv("DISPLAY", ":0")
    assert can_open_browser()
    monkeypatch.delenv("DISPLAY")
    monkeypatch.setenv("BROWSER", "firefox")
    assert can_open_browser()
