"""The parts of the report every run has, read from the ``/tasks`` ledger: the stage summary
table (both pages) and, on ``report.html``, accuracy vs CO₂ over all tasks, energy per stage,
the Gantt chart of tasks per worker, energy vs epoch and time, and parallelism per stage."""

from __future__ import annotations

from pathlib import Path

import xarray as xr

from compressflow.report.markdown import markdown_table, summary_rows
from compressflow.report.plots import (plot_energy_per_stage, plot_energy_vs_training, plot_gantt, plot_pareto_all,
                                       stage_parallelism)
from compressflow.report.sections import SECTIONS

__all__ = ["run_plots_section", "stages_section"]


@SECTIONS.register(ops=None, order=0)
def stages_section(tree: xr.DataTree, folder: Path) -> str:
    """The stage summary: tasks ok/total, reused from earlier runs vs ran in this one,
    accuracy, time, kWh and gCO₂ per stage."""
    text = "## Stages\n\n" + markdown_table(summary_rows(tree, reuse=True))
    ledger = tree["tasks"].to_dataset()
    reused = int(ledger["reused"].values.astype(bool).sum()) if "reused" in ledger else 0
    if reused:
        text += (f"\n\n{reused} of {ledger.sizes['task']} tasks were reused from earlier runs (not run again): "
                 "their time, kWh and gCO2 were spent then and are included above; the run plots show "
                 "only the tasks that ran in this run (where none did, the Gantt chart shows the reused ones "
                 "as they ran then).")
    return text


@SECTIONS.register(ops=None, order=100, html_only=True)
def run_plots_section(tree: xr.DataTree, folder: Path) -> str:
    """The run-level plots and the parallelism table (where a stage ran more than one task);
    a plot without data for it says so in its PNG (:func:`~compressflow.report.plots.nothing_to_draw`)."""
    plots = [
        ("Accuracy vs CO₂ over all tasks", plot_pareto_all(tree, folder / "pareto_all.png")),
        ("Energy per stage", plot_energy_per_stage(tree, folder / "energy_per_stage.png")),
        ("Tasks per worker", plot_gantt(tree, folder / "gantt.png")),
        ("Energy vs epoch and vs time", plot_energy_vs_training(tree, folder / "energy_vs_training.png")),
    ]
    parts = [f"## {title}\n\n![{title}]({png.name})" for title, png in plots]
    rows = stage_parallelism(tree)
    if len(rows) > 1:
        parts.append("## Parallelism per stage\n\nSummed task time over the stage's wall time: how much running "
                     "tasks side by side gained.\n\n" + markdown_table(rows))
    return "\n\n".join(parts)
