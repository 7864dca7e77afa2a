"""``compressflow report OUT``: a run's results as ``OUT/report/report.md`` (Markdown tables
and PNG plots) and ``report.html`` (the same and the run-level plots, self-contained).

The page is assembled from sections registered in :data:`SECTIONS`, each tied to the op
families it reports on (:mod:`~compressflow.report.run` for every run,
:mod:`~compressflow.report.kd` for ``distill``, :mod:`~compressflow.report.pruning` for
``prune`` and ``svcca``, :mod:`~compressflow.report.quantization` for ``quantize``); importing
this package registers them.
"""

from __future__ import annotations

from compressflow.report import kd, pruning, quantization, run, search  # noqa: F401  (register the built-in sections)
from compressflow.report.kd import kd_notes, kd_table, plot_kd_pareto
from compressflow.report.markdown import markdown_table, summary_rows, summary_table
from compressflow.report.page import markdown_to_html, write_html_report, write_report
from compressflow.report.plots import pareto_front
from compressflow.report.sections import SECTIONS, Section

__all__ = ["SECTIONS", "Section", "kd_notes", "kd_table", "markdown_table", "markdown_to_html", "pareto_front",
           "plot_kd_pareto", "summary_rows", "summary_table", "write_html_report", "write_report"]
