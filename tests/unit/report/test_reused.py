"""Reused tasks in the report: the Gantt chart (unless nothing ran) and the parallelism table
show only the tasks that ran in this run, the stage table counts reused vs ran, and results
written before the ledger's ``reused`` variable still report (every task counted as run)."""

from __future__ import annotations

import numpy as np
import pytest

from compressflow.report import markdown_table, plots, summary_rows
from compressflow.report.run import stages_section
from tests.unit.report.synthetic import results_tree


def with_reused(tree, keys: set[str]):
    tasks = tree["tasks"].to_dataset()
    tasks["reused"] = ("task", np.array([k in keys for k in tasks.task.values.tolist()]))
    tree["tasks"] = tasks
    return tree


@pytest.fixture
def drawn(monkeypatch):
    """The figures plots save, kept open to look at."""
    figures = []

    def keep(fig, path, *, tight=True):
        figures.append(fig)
        return path

    monkeypatch.setattr(plots, "save_figure", keep)
    return figures


def test_gantt_draws_only_the_tasks_that_ran(tmp_path, drawn):
    tree = with_reused(results_tree("teacher", "grid"), {"train-teacher0", "train-teacher1", "distill-grid0"})
    assert plots.plot_gantt(tree, tmp_path / "gantt.png") == tmp_path / "gantt.png"
    (ax,) = drawn[0].axes
    assert len(ax.patches) == 5  # 8 tasks, 3 reused
    assert ax.get_title() == "3 tasks reused from earlier runs not drawn"
    # the timeline starts at the first task that ran (distill-grid1, 4th in the ledger: t = 6 s), not at a reused one
    assert min(p.get_x() for p in ax.patches) == 0.0
    assert sorted(p.get_x() for p in ax.patches) == [0.0, 2.0, 4.0, 6.0, 8.0]


def test_gantt_of_results_written_before_reused_draws_everything(tmp_path, drawn):
    tree = results_tree("teacher", "grid")
    assert "reused" not in tree["tasks"]
    plots.plot_gantt(tree, tmp_path / "gantt.png")
    (ax,) = drawn[0].axes
    assert len(ax.patches) == 8 and ax.get_title() == ""


def test_gantt_of_a_run_that_reused_everything_draws_the_reused_tasks(tmp_path, drawn):
    tree = results_tree("teacher")
    path = plots.plot_gantt(with_reused(tree, {"train-teacher0", "train-teacher1"}), tmp_path / "g.png")
    assert path == tmp_path / "g.png"
    (ax,) = drawn[0].axes
    assert sorted(p.get_x() for p in ax.patches) == [0.0, 2.0] and ax.get_title().startswith("no task ran in this run")


def test_stage_parallelism_counts_only_what_ran():
    tree = results_tree("teacher", "grid")
    before = {r[0]: r for r in plots.stage_parallelism(tree)[1:]}
    assert before["teacher"][1] == "2" and before["grid"][1] == "6"
    rows = plots.stage_parallelism(with_reused(tree, {"train-teacher0", "distill-grid0", "distill-grid1"}))
    after = {r[0]: r for r in rows[1:]}
    assert "teacher" not in after  # one task ran: nothing ran side by side
    # grid tasks 2..5 ran (ledger positions 4..7: starts 8, 10, 12, 14 s, 3 s each): wall 9 s, busy 12 s
    assert after["grid"][1:] == ("4", "2", "9.0", "12.0", "1.33", "0.67")


def test_stage_table_shows_reused_vs_ran():
    tree = with_reused(results_tree("teacher", "grid"), {"train-teacher0", "train-teacher1", "distill-grid0"})
    rows = summary_rows(tree, reuse=True)
    assert rows[0] == ("stage", "op", "tasks", "reused", "ran", "accuracy", "time_s", "kWh", "gCO2")
    assert [r[:5] for r in rows[1:]] == [("teacher", "train", "2/2", "2", "0"), ("grid", "distill", "6/6", "1", "5")]
    assert summary_rows(tree)[0] == ("stage", "op", "tasks", "accuracy", "time_s", "kWh", "gCO2")  # the CLI's table
    text = stages_section(tree, None)
    assert markdown_table(rows) in text and "3 of 8 tasks were reused from earlier runs" in text


def test_stage_table_of_results_written_before_reused():
    tree = results_tree("teacher")
    assert [r[3:5] for r in summary_rows(tree, reuse=True)[1:]] == [("0", "2")]
    assert "reused from earlier runs" not in stages_section(tree, None)


def test_stage_table_scores_detection_stages_by_map50():
    tree = results_tree("teacher", "grid")
    teacher = tree["teacher"].to_dataset().drop_vars("accuracy")
    teacher["map_50"] = ("seed", [0.1144, np.nan])  # a failed seed's NaN is left out
    tree["teacher"] = teacher
    grid = tree["grid"].to_dataset()
    acc = grid["accuracy"].values
    rows = {r[0]: r for r in summary_rows(tree)[1:]}
    assert rows["teacher"][3] == "mAP50 0.1144"
    assert rows["grid"][3] == f"{acc.mean():.4f} (max {acc.max():.4f}, n=6)"  # classification keeps accuracy
    tree["teacher"] = teacher.drop_vars("map_50")
    assert summary_rows(tree)[1][3] == "-"
