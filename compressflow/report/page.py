"""The report's pages: ``report.md`` (the sections of :data:`~compressflow.report.sections.SECTIONS`
that cover the run's ops) and ``report.html``, the same plus the HTML-only sections as one
self-contained file (every picture embedded as a data URI; the PNGs are also written beside it)."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import xarray as xr

from compressflow.errors import disk_full
from compressflow.report.sections import SECTIONS

__all__ = ["markdown_to_html", "write_html_report", "write_report"]

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
    out: list[str] = []
    table: list[str] = []

    def flush() -> None:
        if table:
            head, *body = [[html.escape(c.strip()) for c in row.strip().strip("|").split("|")] for row in table
                           if not re.fullmatch(r"\|[-|\s:]+\|", row.strip())]
            out.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body) + "</table>")
            table.clear()

    for line in text.splitlines():  # (quotes need escaping in attributes only, not in a paragraph's text)
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
            out.append(f"<p>{html.escape(line, quote=False)}</p>")
    flush()
    return "\n".join(out)


def write_report(tree: xr.DataTree, out: Path | str) -> Path:
    """Write ``out/report/report.md``, its plots, and ``report.html`` (the same and the
    run-level plots, self-contained); returns the Markdown file's path.

    The sections are those of :data:`~compressflow.report.sections.SECTIONS` that cover an op
    of the run's ledger, in their page order; a section with nothing to show is left out.

    Raises
    ------
    DiskFull
        No space left to write it (one line naming the device and the file).
    """
    folder = Path(out) / "report"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        title = f"# {tree.attrs.get('name', 'compressflow run')}"
        rendered = [(s, s.fn(tree, folder)) for s in SECTIONS.for_tree(tree)]
        shown = [(s, text) for s, text in rendered if text]
        path = folder / "report.md"
        path.write_text("\n\n".join([title, *(text for s, text in shown if not s.html_only)]) + "\n")
        write_html_report(tree, folder, "\n\n".join([title, *(text for _, text in shown)]) + "\n")
    except Exception as exc:  # a plot's savefig may wrap the OSError
        full = disk_full(exc, folder, kept="the results are unchanged")
        if full is None:
            raise
        raise full from exc
    return path


def write_html_report(tree: xr.DataTree, folder: Path, markdown: str) -> Path:
    """Write ``folder/report.html`` from the report's Markdown (pictures embedded from ``folder``)."""
    page = (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(str(tree.attrs.get('name', 'run')))}"
            f" — compressflow report</title><style>{STYLE}</style>{CHECK}</head><body>\n" + markdown_to_html(markdown, folder)
            + "\n</body></html>\n")
    path = folder / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
