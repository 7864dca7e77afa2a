"""``report.html``: the run's report as one self-contained HTML file (every picture embedded
as a data URI; the PNGs are also written beside it). It holds the Markdown report's sections
(stage summary, STKD and pruning tables and plots) and the run-level plots of
:mod:`compressflow.report.plots`."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import xarray as xr

from compressflow.report import markdown_table
from compressflow.report.plots import (plot_energy_per_stage, plot_energy_vs_training, plot_gantt, plot_pareto_all,
                                    stage_parallelism)

__all__ = ["markdown_to_html", "write_html_report"]

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:0.5em 0}
h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #ccc}"""

# after load, record how many pictures failed to decode (read by tests through the DOM)
CHECK = """<script>window.addEventListener('load',()=>{const i=[...document.images];
document.body.dataset.imagesTotal=i.length;document.body.dataset.imagesBroken=i.filter(x=>!x.complete||x.naturalWidth===0).length;});</script>"""


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()


def markdown_to_html(text: str, folder: Path) -> str:
    """The report's Markdown subset — headings, pipe tables, images (embedded from
    ``folder``), paragraphs — as HTML."""
    out, table = [], []

    def flush() -> None:
        if table:
            head, *body = [[html.escape(c.strip()) for c in row.strip().strip("|").split("|")] for row in table
                           if not re.fullmatch(r"\|[-|\s:]+\|", row.strip())]
            out.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body) + "</table>")
            table.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if m := re.fullmatch(r"(#{1,3}) (.*)", line):
            level = len(m.group(1))
            out.append(f"<h{level}>{html.escape(m.group(2))}</h{level}>")
        elif m := re.fullmatch(r"!\[(.*)\]\((.*)\)", line.strip()):
            out.append(f'<img alt="{html.escape(m.group(1))}" src="{_data_uri(folder / m.group(2))}">')
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    flush()
    return "\n".join(out)


def write_html_report(tree: xr.DataTree, folder: Path, markdown: str) -> Path:
    """Write ``folder/report.html`` from the Markdown report and the run-level plots."""
    parts = [markdown_to_html(markdown, folder)]
    sections = [
        ("Accuracy vs CO₂ over all tasks", plot_pareto_all(tree, folder / "pareto_all.png")),
        ("Energy per stage", plot_energy_per_stage(tree, folder / "energy_per_stage.png")),
        ("Tasks per worker", plot_gantt(tree, folder / "gantt.png")),
        ("Energy vs epoch and vs time", plot_energy_vs_training(tree, folder / "energy_vs_training.png")),
    ]
    for title, png in sections:
        if png is not None:
            parts.append(f"<h2>{html.escape(title)}</h2>\n<img alt=\"{html.escape(title)}\" src=\"{_data_uri(png)}\">")
    rows = stage_parallelism(tree)
    if len(rows) > 1:
        parts.append("<h2>Parallelism per stage</h2>\n<p>Summed task time over the stage's wall time: how much "
                     "running tasks side by side gained.</p>\n" + markdown_to_html(markdown_table(rows), folder))
    page = (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(str(tree.attrs.get('name', 'run')))}"
            f" — compressflow report</title><style>{STYLE}</style>{CHECK}</head><body>\n" + "\n".join(parts)
            + "\n</body></html>\n")
    path = folder / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
