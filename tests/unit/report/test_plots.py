"""The run plots' contract: every ``plot_*`` returns the path of a PNG that decodes and shows
something, never None — a re-run that reused every task draws the timeline its tasks were
recorded with, and a plot without data says why (so a notebook can always display it)."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest
import xarray as xr

from compressflow.report import (nothing_to_draw, plot_energy_per_stage, plot_energy_vs_training, plot_gantt,
                                 plot_pareto_all, plots)
from compressflow.report.run import run_plots_section
from compressflow.results.build import build_results
from compressflow.rundir.records import LedgerEntry, Record
from tests.support.records import swept_graph
from tests.unit.report.synthetic import results_tree

PLOTS = [plot_pareto_all, plot_energy_per_stage, plot_gantt, plot_energy_vs_training]
C0 = np.array([0x1F, 0x77, 0xB4]) / 255  # matplotlib's first colour: the one stage's bars


def reused_everything() -> xr.DataTree:
    """The tree of a re-run (real :func:`build_results`): two ``train`` tasks, both reused,
    with the start, end, energy and curves their earlier run recorded."""
    spec, stages = swept_graph("train", "seed", stage="teacher")
    tasks = {}
    for i, node in enumerate(stages["teacher"]):
        metrics = xr.Dataset({"accuracy": 0.9 + 0.01 * i, "train_flops": 1e9,
                              "energy_curve_kwh": ("epoch", [1e-5, 2e-5]), "elapsed_curve_s": ("epoch", [1.0, 2.0])})
        tasks[node.key] = LedgerEntry(node.key, node.stage, node.op, dict(node.point), status="ok",
                                      worker=f"tls://127.0.0.1:{4000 + i}", start=1e9 + 5 * i, end=1e9 + 5 * i + 4,
                                      energy={"energy_kwh": 2e-5, "cpu_kwh": 1.5e-5, "gpu_kwh": 0.0, "ram_kwh": 5e-6},
                                      record=Record(metrics))
    return build_results(spec, stages, tasks, reused=set(tasks))


def png(path) -> np.ndarray:
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 300
    assert image[..., :3].std() > 0.05, "a blank image"
    return image[..., :3]


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plots save, kept open to look at (and still written)."""
    figures = []
    save = plots.save_figure

    def keep(fig, path, *, tight=True):
        figures.append(fig)
        return save(fig, path, tight=tight)

    monkeypatch.setattr(plots, "save_figure", keep)
    return figures


def test_a_rerun_that_reused_every_task_gets_a_picture_from_every_plot(tmp_path):
    tree = reused_everything()
    assert tree["tasks"]["reused"].values.all()
    for plot in PLOTS:
        path = tmp_path / f"{plot.__name__}.png"
        assert plot(tree, path) == path
        png(path)
    gantt = png(tmp_path / "plot_gantt.png")
    # the reused tasks' bars, in the stage's colour (a placeholder has no bars)
    assert (np.abs(gantt - C0).max(axis=-1) < 0.02).sum() > 200


def test_gantt_of_a_rerun_draws_the_recorded_timeline_hatched(tmp_path, drawn):
    plot_gantt(reused_everything(), tmp_path / "g.png")
    (ax,) = drawn[0].axes
    assert [(p.get_x(), p.get_width(), p.get_hatch()) for p in ax.patches] == [(0.0, 4.0, "//"), (5.0, 4.0, "//")]
    assert ax.get_title() == "no task ran in this run: 2 reused tasks, drawn as they ran earlier"


def test_a_plot_without_data_says_why(tmp_path, drawn):
    tree = results_tree("pruned")  # no energy curves
    path = plot_energy_vs_training(tree, tmp_path / "e.png")
    png(path)
    texts = [t.get_text() for t in drawn[0].axes[0].texts]
    assert texts == ["Energy vs epoch and vs time: nothing to draw", "no task recorded a per-epoch energy curve"]
    tasks = tree["tasks"].to_dataset()
    tasks["start"] = tasks["end"] = ("task", np.full(tasks.sizes["task"], np.datetime64("NaT"), "datetime64[ns]"))
    tree["tasks"] = tasks
    plot_gantt(tree, tmp_path / "g.png")
    assert drawn[1].axes[0].texts[1].get_text() == "no task has a recorded start and end"
    assert nothing_to_draw(tmp_path / "n.png", "x", "y") == tmp_path / "n.png"


def test_the_report_page_keeps_a_plot_without_data_and_says_why(tmp_path):
    text = run_plots_section(results_tree("pruned"), tmp_path)  # no energy curves
    assert "## Energy vs epoch and vs time\n\n![Energy vs epoch and vs time](energy_vs_training.png)" in text
    png(tmp_path / "energy_vs_training.png")
