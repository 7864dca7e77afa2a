"""``compressflow report OUT``: a run's results as ``OUT/report/report.md`` (Markdown tables
and PNG plots) and ``report.html`` (the same and the run-level plots, self-contained).

The page is assembled from sections registered in :data:`SECTIONS`, each tied to the op
families it reports on (:mod:`~compressflow.report.run` for every run,
:mod:`~compressflow.report.kd` for ``distill``, :mod:`~compressflow.report.pruning` for
``prune`` and ``svcca``, :mod:`~compressflow.report.quantization` for ``quantize``); importing
this package registers them.

The plots of a run are public here for notebooks: each ``plot_*(tree, path)`` writes a PNG
and returns its path, never None (a plot without data says why in its PNG), e.g.
``IPython.display.Image(filename=str(plot_gantt(tree, Path(out) / "gantt.png")))``.
"""

from __future__ import annotations

from compressflow.report import kd, pruning, quantization, run, search  # noqa: F401  (register the built-in sections)
from compressflow.report.kd import kd_notes, kd_table, plot_kd_pareto
from compressflow.report.markdown import markdown_table, summary_rows, summary_table
from compressflow.report.page import markdown_to_html, write_html_report, write_report
from compressflow.report.plots import (nothing_to_draw, pareto_front, plot_energy_per_stage, plot_energy_vs_training,
                                       plot_gantt, plot_pareto_all)
from compressflow.report.sections import SECTIONS, Section

__all__ = ["SECTIONS", "Section", "kd_notes", "kd_table", "markdown_table", "markdown_to_html", "nothing_to_draw",
           "pareto_front", "plot_energy_per_stage", "plot_energy_vs_training", "plot_gantt", "plot_kd_pareto",
           "plot_pareto_all", "summary_rows", "summary_table", "write_html_report", "write_report"]
