"""The ``/compressflow`` page: Bokeh figures embedded with :func:`bokeh.embed.json_item`,
BokehJS served from the bokeh package itself (:func:`bokeh_static`; no CDN) by the scheduler
or by ``compressflow dashboard``, and a small script that polls ``data.json`` every second and
swaps the figures' data and the stage table."""

from __future__ import annotations

import html
import json
import math
from typing import Any

from compressflow.dashboard._state import STATES

__all__ = ["COLUMNS", "PATH", "STATE_COLOURS", "bokeh_static", "page", "payload", "rows", "sources"]

PATH = "compressflow"  #: the page's path (under the scheduler dashboard's prefix, or at the root)
#: The colour of every task state (the stacked bars; a test looks for them on screen).
STATE_COLOURS = {"pending": "#c7c7c7", "running": "#1f77b4", "ok": "#2ca02c", "failed": "#d62728",
                 "cancelled": "#ff7f0e", "reused": "#9467bd"}
#: The stage table: (field of a :meth:`StudyView.stage_table` row, header).
COLUMNS = (("stage", "stage"), ("tasks", "tasks"), *((s, s) for s in STATES), ("kwh", "kWh"),
           ("co2_g", "gCO₂"), ("reused_kwh", "reused kWh"))
_NO_STUDY = "(no study yet)"
_FIGURES = ("cf-states-fig", "cf-kwh-fig", "cf-co2-fig")


def bokeh_static() -> str:
    """The folder of the installed bokeh package's BokehJS files (``js/bokeh.min.js``, ...),
    which the page loads from ``<page>/static/``."""
    from bokeh.util.paths import bokehjs_path

    return str(bokehjs_path())


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def rows(snapshot: dict[str, Any]) -> list[list[str]]:
    """The stage table as text, one row per stage in :data:`COLUMNS` order (``.3g`` numbers)."""
    return [[_fmt(row[name]) for name, _ in COLUMNS] for row in snapshot["table"]]


def _palette(stages: list[str]) -> dict[str, str]:
    from bokeh.palettes import Dark2_8

    return {s: Dark2_8[i % len(Dark2_8)] for i, s in enumerate(stages)}


def sources(snapshot: dict[str, Any]) -> dict[str, dict[str, list[Any]]]:
    """The columns of every named ``ColumnDataSource`` on the page, from a snapshot."""
    table = snapshot["table"] or [{"stage": _NO_STUDY, **dict.fromkeys(STATES, 0), "kwh": 0.0, "co2_g": 0.0}]
    colour = _palette(snapshot["stages"])
    points, curves = snapshot["scatter"], snapshot["curves"]
    return {
        "cf-states": {"stage": [r["stage"] for r in table], **{s: [r[s] for r in table] for s in STATES}},
        "cf-energy": {"stage": [r["stage"] for r in table], "kwh": [r["kwh"] for r in table],
                      "co2_g": [r["co2_g"] for r in table]},
        "cf-scatter": {"key": [p["key"] for p in points], "stage": [p["stage"] for p in points],
                       "accuracy": [p["accuracy"] for p in points], "co2_g": [p["co2_g"] for p in points],
                       "kwh": [p["kwh"] for p in points], "colour": [colour.get(p["stage"], "#000") for p in points],
                       "reused": ["reused" if p["reused"] else "ran" for p in points]},
        "cf-curves": {"key": [c["key"] for c in curves], "stage": [c["stage"] for c in curves],
                      "xs": [c["epoch"] for c in curves], "acc": [c["val_accuracy"] for c in curves],
                      "kwh": [c["kwh"] for c in curves], "colour": [colour.get(c["stage"], "#000") for c in curves],
                      "alpha": [1.0 if c["running"] else 0.3 for c in curves]},
    }


def payload(snapshot: dict[str, Any]) -> dict[str, Any]:
    """``data.json``: the snapshot plus the figures' columns, their stage axis and the table text."""
    factors = snapshot["stages"] or [_NO_STUDY]
    return {**snapshot, "sources": sources(snapshot), "factors": factors, "rows": rows(snapshot)}


def _layout(data: dict[str, Any], live: bool = True):
    from bokeh.layouts import column, row
    from bokeh.models import ColumnDataSource, FactorRange, HoverTool
    from bokeh.plotting import figure

    src = {name: ColumnDataSource(cols, name=name) for name, cols in data["sources"].items()}
    width, height = 520, 280
    states = figure(title="Tasks per stage by state", y_range=FactorRange(factors=data["factors"]), name=_FIGURES[0],
                    x_axis_label="tasks", toolbar_location=None, width=width, height=height)
    states.hbar_stack(list(STATES), y="stage", height=0.7, color=[STATE_COLOURS[s] for s in STATES],
                      source=src["cf-states"], legend_label=list(STATES))
    states.legend.orientation, states.legend.label_text_font_size = "horizontal", "8pt"
    states.add_layout(states.legend[0], "below")  # beside the bars it would hide some
    bars = []
    for name, field, unit, title, colour in ((_FIGURES[1], "kwh", "kWh", "Energy per stage", "#1f77b4"),
                                             (_FIGURES[2], "co2_g", "gCO₂", "CO₂ per stage", "#8c564b")):
        fig = figure(title=f"{title} (live)" if live else title, y_range=FactorRange(factors=data["factors"]),
                     name=name, x_axis_label=unit, toolbar_location=None, width=width, height=height)
        fig.hbar(y="stage", right=field, height=0.7, color=colour, source=src["cf-energy"])
        fig.add_tools(HoverTool(tooltips=[("stage", "@stage"), (unit, f"@{field}{{0.000e}}")]))
        bars.append(fig)
    scatter = figure(title="Accuracy vs CO₂ of finished tasks", x_axis_label="gCO₂ per task",
                     y_axis_label="accuracy", width=width, height=height)
    scatter.scatter("co2_g", "accuracy", color="colour", size=9, legend_field="stage", source=src["cf-scatter"])
    scatter.add_tools(HoverTool(tooltips=[("task", "@key"), ("stage", "@stage (@reused)"), ("accuracy", "@accuracy"),
                                          ("gCO₂", "@co2_g{0.000e}")]))
    curves = []
    for field, label, title in (("acc", "validation accuracy", "Validation accuracy"), ("kwh", "kWh so far", "Energy")):
        fig = figure(title=f"{title} per epoch (running tasks; finished ones faint)" if live else
                     f"{title} per epoch (the tasks that ended last)",
                     x_axis_label="epoch", y_axis_label=label, width=width, height=height)
        fig.multi_line("xs", field, color="colour", line_alpha="alpha", line_width=2, source=src["cf-curves"])
        fig.add_tools(HoverTool(tooltips=[("task", "@key"), ("stage", "@stage")]))
        curves.append(fig)
    return column(row(states, bars[0]), row(bars[1], scatter), row(*curves))


_SCRIPT = """
(function () {
  const base = location.pathname.replace(/\\/+$/, "");
  const study = new URLSearchParams(location.search).get("study");
  const item = JSON.parse(document.getElementById("cf-item").textContent);
  let polls = 0;
  function cell(tag, text) { const c = document.createElement(tag); c.textContent = text; return c; }
  function update(d) {
    if (!study && d.study && d.study !== document.body.dataset.study) { location.reload(); return; }
    const doc = Bokeh.documents[Bokeh.documents.length - 1];
    for (const [name, data] of Object.entries(d.sources)) {
      const s = doc.get_model_by_name(name);
      if (s) s.data = data;
    }
    for (const name of FIGURES) {
      const f = doc.get_model_by_name(name);
      if (f && JSON.stringify(f.y_range.factors) !== JSON.stringify(d.factors)) f.y_range.factors = d.factors;
    }
    const body = document.getElementById("cf-table-body");
    body.replaceChildren(...d.rows.map(function (r) {
      const tr = document.createElement("tr");
      r.forEach(function (v, i) { tr.appendChild(cell(i ? "td" : "th", v)); });
      tr.dataset.stage = r[0];
      return tr;
    }));
    document.getElementById("cf-study").textContent = d.study ? d.name + " (" + d.study + ")" : "no study yet";
  }
  function poll() {
    fetch(base + "/data.json" + (study ? "?study=" + encodeURIComponent(study) : ""), {cache: "no-store"})
      .then(function (r) { return r.json(); })
      .then(function (d) { update(d); document.body.dataset.cfPolls = String(++polls); })
      .catch(function () {});
  }
  Bokeh.embed.embed_item(item, "cf-plots").then(function () {
    document.body.dataset.cfRendered = "1";
    poll();
    setInterval(poll, 1000);
  });
})();
"""


def page(snapshot: dict[str, Any], base: str, *, live: bool = True) -> str:
    """The HTML of the page for ``snapshot``, its URLs under ``base`` (the page's own path):
    the table and the figures show the snapshot's numbers before any script runs. ``live``:
    served by a scheduler (a link to its Dask status page); else by ``compressflow dashboard``
    from run directories (the links to the other studies name their run directories)."""
    from bokeh.core.types import ID
    from bokeh.embed import json_item

    data = payload(snapshot)
    item = json.dumps(json_item(_layout(data, live), ID("cf-plots"))).replace("</", "<\\/")
    esc = html.escape
    head = "".join(f"<th>{esc(title)}</th>" for _, title in COLUMNS)
    body = "".join("<tr data-stage=\"{}\">{}</tr>".format(
        esc(r[0]), "".join(f"<{t}>{esc(v)}</{t}>" for t, v in zip(["th"] + ["td"] * len(r), r))) for r in data["rows"])
    study = f"{esc(snapshot['name'])} ({esc(snapshot['study'])})" if snapshot["study"] else "no study yet"
    links = " ".join(f'<a href="?study={esc(s["study"])}">{esc((s["name"] or s["study"]) if live else s["study"])}</a>'
                     for s in snapshot["studies"])
    title, dask = ("Dask dashboard", ' · <a href="status">Dask status</a>') if live else ("run directories", "")
    factors = f"<p class=\"cf-carbon\">gCO₂ = kWh × PUE {_fmt(snapshot.get('pue'))} × " \
              f"{_fmt(snapshot.get('intensity_g_per_kwh'))} gCO₂/kWh</p>" if snapshot["study"] else ""
    script = _SCRIPT.replace("FIGURES", json.dumps(list(_FIGURES)))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>compressflow — {title}</title>
<script src="{esc(base)}/static/js/bokeh.min.js"></script>
<style>body{{font-family:sans-serif;margin:1em}} table{{border-collapse:collapse;margin:.5em 0}}
th,td{{border:1px solid #ccc;padding:2px 8px;text-align:right}} thead th{{background:#eee}}</style>
</head><body data-study="{esc(snapshot['study'] or '')}">
<h1>compressflow</h1>
<p>Study: <b id="cf-study">{study}</b>{dask}{' · studies: ' + links if links else ''}</p>
{factors}
<table id="cf-table"><thead><tr>{head}</tr></thead><tbody id="cf-table-body">{body}</tbody></table>
<div id="cf-plots"></div>
<script type="application/json" id="cf-item">{item}</script>
<script>{script}</script>
</body></html>
"""
