"""The knowledge-distillation part of the report: for every ``kd_comparison`` group (a
``distill`` temperature grid against stochastic τ, and any searches over τ beside them),
STKD's Table 4 and accuracy vs CO₂ with the Pareto front."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib import ticker

from compressflow.report.markdown import markdown_table
from compressflow.report.plots import draw_pareto_front, pyplot, save_figure
from compressflow.report.sections import SECTIONS

__all__ = ["kd_notes", "kd_section", "kd_table", "plot_kd_pareto"]


def _pm(mean: float, std: float) -> str:
    """``mean ± std %``; ``± —`` where the std is undefined (a single run)."""
    return f"{100 * mean:.2f} ± " + (f"{100 * std:.2f} %" if np.isfinite(std) else "— %")


def _metric(comparison: xr.Dataset) -> tuple[str, str]:
    """The compared score's variable prefix and name (``accuracy``; ``map_50``, ``mAP@0.5``)."""
    return comparison.attrs.get("metric", "accuracy"), comparison.attrs.get("metric_label", "accuracy")


def _num(value: float, fmt: str) -> str:
    """``value`` formatted, — where it is unknown (NaN: a cost the op does not record)."""
    return format(value, fmt) if np.isfinite(value) else "—"


def _best_tau(c: xr.Dataset) -> str:
    tied = int(c["tied"]) if "tied" in c else 1
    best = f"{float(c.best_temperature):g}"
    return best if tied <= 1 else f"{best} (tie: {c['tied_temperatures'].item()})"


def _rows(comparison: xr.Dataset) -> list[tuple[str, dict[str, object], xr.Dataset]]:
    """``(label, point, rows of its methods)`` per loss and per point of the pair axes
    (``hkd, teacher_model=resnet18, student_model=wrn_16_1``)."""
    dims = ["loss", *comparison.attrs.get("pair_axes", ())]
    out = []
    for values in itertools.product(*(comparison[d].values.tolist() for d in dims)):
        point = dict(zip(dims, values))
        label = ", ".join([str(values[0]), *(f"{d}={v}" for d, v in list(point.items())[1:])])
        out.append((label, point, comparison.sel(point)))
    return out


def kd_notes(comparison: xr.Dataset) -> list[str]:
    """Lines that qualify the table: τ ties on validation, and single-run rows."""
    notes = []
    for loss, _, c in _rows(comparison):
        if "tied" in c and int(c["tied"]) > 1:
            notes.append(f"Note: for {loss}, τ = {c['tied_temperatures'].item()} tie on validation "
                         f"{_metric(comparison)[1]}; "
                         f"τ = {float(c.best_temperature):g} is reported, but the grid does not single out a best τ.")
    if (comparison["n_runs"] < 2).any():
        notes.append("Note: — marks a standard deviation that one run cannot give (sweep more seeds).")
    return notes


def kd_table(comparison: xr.Dataset) -> str:
    """STKD Table 4 from a ``kd_comparison`` group: per loss, the tuned grid and the
    stochastic run, and the energy ratio. A tie for the best τ is shown in the τ column
    (see :func:`kd_notes`), a single run's std as —."""
    metric, label = _metric(comparison)
    rows = [(", ".join(["loss", *comparison.attrs.get("pair_axes", ())]), "method", f"test {label} (mean ± std)", "best τ (val)", "runs", "GFLOPs", "kWh", "gCO₂",
             "energy vs stochastic")]
    for loss, _, c in _rows(comparison):
        for method in comparison["method"].values:
            m = c.sel({"method": method})
            tuned, stochastic = method == "tuned", method == "stochastic"
            ratio = float(m.energy_vs_stochastic) if "energy_vs_stochastic" in m else float(c.energy_ratio)
            rows.append((
                str(loss), str(method),
                _pm(float(m[f"{metric}_mean"]), float(m[f"{metric}_std"])),
                _best_tau(c) if tuned else "drawn per batch" if stochastic else "searched per seed",
                str(int(m.n_runs)),
                _num(float(m.gflops), ".4g"), _num(float(m.energy_kwh), ".3g"), _num(float(m.co2_g), ".3g"),
                f"{ratio:.2f}× (grid of {int(c.grid_points)})" if tuned else "1×" if stochastic else f"{ratio:.2f}×",
            ))
    return markdown_table(rows)


def plot_kd_pareto(tree: xr.DataTree, comparison: xr.Dataset, path: Path) -> Path:
    """Test accuracy vs CO₂: every grid τ (all seeds), each loss's tuned grid (whole-grid
    cost) and stochastic run, and the Pareto front over all of them."""
    plt = pyplot()
    grid = tree[comparison.attrs["grid_stage"]].to_dataset()
    metric, label = _metric(comparison)
    fig, ax = plt.subplots(figsize=(9.5, 4.8), dpi=120)
    points = []
    markers = dict(zip([str(m) for m in comparison["method"].values], ["s", "*", "D", "^", "v", "P", "X", "h"]))
    for i, (loss, point, c) in enumerate(_rows(comparison)):
        color = f"C{i % 10}"
        g = grid.sel({d: v for d, v in point.items() if d in grid.dims})
        seeds = [d for d in g[metric].dims if d != "temperature"]
        acc = g[metric].mean(seeds) if seeds else g[metric]
        co2 = g["co2_g"].sum(seeds) if seeds else g["co2_g"]
        ax.scatter(co2, 100 * acc, s=14, color=color, alpha=0.45, label=f"{loss}: one τ (all seeds)")
        points += list(zip(co2.values, 100 * acc.values))
        for method, marker in markers.items():
            m = c.sel({"method": method})
            x, y = float(m.co2_g), 100 * float(m[f"{metric}_mean"])
            std = float(m[f"{metric}_std"])
            ax.errorbar(x, y, yerr=100 * std if np.isfinite(std) else None, fmt=marker, ms=11 if marker == "*" else 8,
                        color=color, mec="black", label=f"{loss}: {method}" + (" (whole grid)" if method == "tuned" else ""))
            points.append((x, y))
    draw_pareto_front(ax, points, color="grey", ls="--")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%.3g"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("CO₂ (g CO₂eq, total over seeds; log scale)")
    ax.set_ylabel(f"test {label} (%)")
    ax.set_title("Grid search over τ vs stochastic τ (STKD Table 4)" if len(markers) == 2
                 else "Grid, early-stopping searches and stochastic τ")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return save_figure(fig, path)


@SECTIONS.register(ops=("distill", "distill_detection"), order=10)
def kd_section(tree: xr.DataTree, folder: Path) -> str | None:
    """One part per ``kd_comparison`` group: its table, notes and Pareto plot."""
    parts = []
    for name in sorted(n for n in tree.children if n.startswith("kd_comparison")):
        comparison = tree[name].to_dataset()
        png = plot_kd_pareto(tree, comparison, folder / f"{name}_pareto.png")
        parts.append("\n".join([
            f"## {name}: grid search vs stochastic temperature", "",
            f"Grid stage `{comparison.attrs['grid_stage']}`, stochastic stage `{comparison.attrs['stochastic_stage']}`; "
            f"best τ by {comparison.attrs['selection']}. Costs are totals over all runs of each method.",
            "", kd_table(comparison), *[x for note in kd_notes(comparison) for x in ("", note)],
            "", f"![accuracy vs CO₂]({png.name})",
        ]))
    return "\n\n".join(parts) or None
