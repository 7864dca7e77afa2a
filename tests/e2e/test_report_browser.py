"""``report.html`` rendered in a real browser (headless Chromium, Debian's ``chromium``;
``.ci/run`` installs it): the page is not blank and every embedded picture decodes."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

import compressflow
from compressflow.report import write_report
from tests.support import tiny_spec

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]


@pytest.fixture(scope="module")
def report(client, tmp_path_factory):
    out = tmp_path_factory.mktemp("html")
    spec = tiny_spec()
    spec["stages"]["teacher"]["sweep"] = {"seed": [0, 1, 2]}
    tree = compressflow.run(spec, cluster=client, out=out, show_progress=False)
    write_report(tree, out)
    return out / "report" / "report.html", tree


def test_html_is_self_contained_with_the_run_plots(report):
    path, tree = report
    text = path.read_text()
    for title in ("Stages", "Accuracy vs CO₂ over all tasks", "Energy per stage", "Tasks per worker",
                  "Energy vs epoch and vs time", "Parallelism per stage"):
        assert f">{title}<" in text, title
    assert 'src="file:' not in text and text.count('src="data:image/png;base64,') >= 4
    for png in ("pareto_all.png", "energy_per_stage.png", "gantt.png", "energy_vs_training.png"):
        assert (path.parent / png).stat().st_size > 10_000
    kwh = f"{float(tree['tasks']['energy_kwh'].sel(task=tree['tasks']['stage'] == 'teacher').sum()):.3g}"
    assert f"<td>{kwh}</td>" in text  # the summary table carries the ledger's numbers


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (.ci/run installs Debian's chromium)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    path, _ = report
    dom = subprocess.run([CHROMIUM, *FLAGS, "--virtual-time-budget=5000", "--dump-dom", path.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    total = int(re.search(r'data-images-total="(\d+)"', dom).group(1))
    broken = int(re.search(r'data-images-broken="(\d+)"', dom).group(1))
    assert total >= 4 and broken == 0
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *FLAGS, "--window-size=1200,2400", f"--screenshot={shot}", path.as_uri()],
                   capture_output=True, timeout=120, check=True)
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (2400, 1200)
    assert pixels.std() > 0.1  # not a blank page
    colours = np.unique((pixels[::4, ::4] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 200  # plots, not just text on white
