"""The page in a real headless Chromium against the session's running scheduler during a real
run: it loads, its plots are drawn with the run's data, and its numbers match the ledger."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request

import numpy as np
import pytest

import compressflow
from compressflow.dashboard import install_dashboard
from compressflow.dashboard._page import STATE_COLOURS
from tests.support import tiny_spec

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=5000"]
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (.ci/run installs Debian's chromium)")]


def get(address: str) -> tuple[int, str]:
    with urllib.request.urlopen(address, timeout=10) as r:
        return r.status, r.read().decode()


def chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def run(client, tmp_path_factory):
    """A real two-stage study on the session cluster (two trainings of two epochs, their
    evaluations), watched through the page while it runs."""
    link = install_dashboard(client)
    assert link is not None and link.endswith("/compressflow")
    out = tmp_path_factory.mktemp("dash")
    spec = tiny_spec()
    spec["stages"]["teacher"]["params"]["epochs"] = 2
    spec["stages"]["teacher"]["sweep"] = {"seed": [0, 1]}
    study = compressflow.submit(spec, cluster=client, out=out)  # its study event is logged before any task
    seen, shot = [], out / "shot.png"
    while True:  # at least once, even if the run were over before the first look
        running = not study.done
        seen.append(json.loads(get(f"{link}/data.json?study={study.id}")[1])["table"])
        if not shot.exists():  # the page in the browser while the study runs
            chromium("--window-size=1100,1200", f"--screenshot={shot}", link)
        if not running:
            break
        time.sleep(0.2)
    tree = study.result()
    done = out / "done.png"  # and once it has ended, the scheduler still up
    chromium("--window-size=1100,1200", f"--screenshot={done}", f"{link}?study={study.id}")
    return f"{link}?study={study.id}", f"{link}/data.json?study={study.id}", tree, seen, (shot, done)


def test_the_page_follows_the_run_live(run):
    _, _, tree, seen, _ = run
    first, last = seen[0], seen[-1]
    assert sum(r["pending"] + r["running"] for r in first) > 0  # the study was shown before its tasks ended
    assert [(r["stage"], r["tasks"]) for r in first] == [("teacher", 2), ("test", 2)]
    assert len(seen) >= 2 and sum(r["ok"] for r in last) <= int((tree["tasks"]["status"] == "ok").sum())


def test_numbers_on_the_page_match_the_ledger(run):
    page_link, data_link, tree, _, _ = run
    ledger = tree["tasks"].to_dataset()
    status, page = get(page_link)
    assert status == 200 and "<title>compressflow — Dask dashboard</title>" in page
    data = json.loads(get(data_link)[1])
    for row in data["table"]:
        mine = ledger.where(ledger["stage"] == row["stage"], drop=True)
        assert row["ok"] == int((mine["status"] == "ok").sum()) == row["tasks"] == 2
        assert row["kwh"] == pytest.approx(float(mine["energy_kwh"].sum()), rel=1e-9)
        assert row["co2_g"] == pytest.approx(float(mine["co2_g"].sum()), rel=1e-9)
    kwh = f"{float(ledger['energy_kwh'].where(ledger['stage'] == 'teacher').sum()):.3g}"
    # the page after its script ran in the browser: drawn, polled, the teacher's kWh as text
    dom = chromium("--dump-dom", page_link).stdout
    assert re.search(r'<body[^>]*data-cf-rendered="1"', dom) and re.search(r'data-cf-polls="[1-9]', dom)
    teacher = re.search(r'<tr data-stage="teacher">(.*?)</tr>', dom).group(1)
    cells = re.findall(r"<t[hd]>(.*?)</t[hd]>", teacher)
    assert cells[:2] == ["teacher", "2"] and cells[4] == "2" and cells[8] == kwh  # tasks, ok, kWh
    curves = data["sources"]["cf-curves"]
    assert sorted(len(xs) for xs in curves["xs"]) == [2, 2]  # both teachers' two epochs
    assert len(data["sources"]["cf-scatter"]["key"]) == 4  # every finished task has an accuracy


def painted(pixels: np.ndarray, hex_colour: str) -> int:
    rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(pixels - rgb).sum(axis=2) < 6).sum())


def test_plots_are_drawn_with_the_runs_data(run):
    from PIL import Image

    *_, (during, done) = run
    for shot in (during, done):
        pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
        assert pixels.shape[:2] == (1200, 1100)
        assert len(np.unique(pixels[::2, ::2].reshape(-1, 3), axis=0)) > 100  # plots, not text on white
        # the stacked bars of the tasks' states: drawn from the study's data, not empty axes
        assert sum(painted(pixels, colour) for colour in STATE_COLOURS.values()) > 5000
    # at the end every task is ok: green bars, and the energy bars (kWh > 0) are drawn
    assert painted(pixels, STATE_COLOURS["ok"]) > 5000 and painted(pixels, "#1f77b4") > 5000
