"""The search part of the report: for every stage with a ``search:`` (its group carries
``search_strategy``), the trials' outcome in a table, the metric against the cumulative energy
spent (trials in the order they were asked; pruned ones stop early), the metric at every rung,
and for several objectives the Pareto front."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import xarray as xr

from compressflow.report.markdown import markdown_table
from compressflow.report.plots import pyplot, save_figure
from compressflow.report.sections import SECTIONS

__all__ = ["plot_search", "search_section", "search_table"]

_COLORS = {"ok": "C0", "pruned": "C1", "failed": "C3", "cancelled": "C7"}


def _trials(ds: xr.Dataset) -> xr.Dataset:
    """The group with its trials in one dimension ``trial`` (sweep points stacked in front)."""
    other = [d for d in ds["status"].dims if d != "trial"]
    return ds.stack(run=[*other, "trial"]).dropna("run", subset=["energy_kwh"]) if other else \
        ds.rename({"trial": "run"}).dropna("run", subset=["energy_kwh"])


def search_table(name: str, ds: xr.Dataset) -> str:
    """Per-stage summary: strategy, trials by status, total kWh and gCO₂, the best trial(s)."""
    counts = Counter(str(s) for s in np.asarray(ds["status"].values).ravel() if str(s) not in ("", "nan"))
    best = json.loads(ds.attrs.get("best", "[]"))
    shown = "; ".join(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in b["params"].items())
                      + f" → {b['value']:.4f}" for b in best[:3]) or "—"
    rows = [("stage", "strategy", "trials", "ok / pruned / failed", "kWh (all tasks)", "gCO₂", "best (validation)"),
            (name, ds.attrs["search_strategy"], str(int(ds.attrs.get("search_trials", 0))),
             f"{counts['ok']} / {counts['pruned']} / {counts['failed'] + counts['cancelled']}",
             f"{float(ds['energy_kwh'].sum()):.3g}", f"{float(ds['co2_g'].sum()):.3g}", shown)]
    return markdown_table(rows)


def plot_search(name: str, ds: xr.Dataset, path: Path) -> Path:
    """Metric vs cumulative kWh, and the metric per rung (or the Pareto front of two objectives)."""
    plt = pyplot()
    objectives = json.loads(ds.attrs["search_objectives"])
    metric = objectives[0][0]
    runs = _trials(ds)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120)
    energy = np.cumsum(np.nan_to_num(runs["energy_kwh"].values.astype(float)))
    status = [str(s) for s in runs["status"].values]
    value = runs[metric].values.astype(float) if metric in runs else np.full(len(status), np.nan)
    for s in dict.fromkeys(status):
        pick = [i for i, x in enumerate(status) if x == s]
        left.scatter(energy[pick], value[pick], s=18, color=_COLORS.get(s, "C4"), label=s)
    best_so_far = np.fmax.accumulate(np.where(np.array(status) == "ok", value, np.nan)) if objectives[0][1] == "max" \
        else np.fmin.accumulate(np.where(np.array(status) == "ok", value, np.nan))
    left.step(energy, best_so_far, where="post", color="black", lw=1, label="best finished so far")
    left.set_xlabel("cumulative energy (kWh, trials in the order asked)")
    left.set_ylabel(metric)
    left.set_title(f"{name}: {ds.attrs['search_strategy']}")
    left.grid(alpha=0.3)
    left.legend(fontsize=7)
    if len(objectives) > 1 and "pareto" in runs:
        second = objectives[1][0]
        y = runs[second].values.astype(float) if second in runs else np.full(len(status), np.nan)
        front = runs["pareto"].values.astype(float) > 0.5
        right.scatter(y[~front], value[~front], s=18, color="C7", label="dominated")
        right.scatter(y[front], value[front], s=30, color="C3", label="Pareto set")
        order = np.argsort(y[front])
        right.step(y[front][order], value[front][order], where="post", color="C3", lw=1)
        right.set_xlabel(second)
        right.set_ylabel(metric)
        right.set_title("Pareto front")
        right.legend(fontsize=7)
    elif f"{metric}_by_rung" in runs:
        rung = runs["rung"].values
        for i, s in enumerate(status):
            curve = runs[f"{metric}_by_rung"].values[i].astype(float)
            right.plot(rung, curve, marker="o", ms=3, lw=0.8, color=_COLORS.get(s, "C4"), alpha=0.7)
        right.set_xscale("log", base=2)
        right.set_xticks(rung, [str(int(r)) for r in rung])
        right.set_xlabel("rung (epochs of the budget)")
        right.set_ylabel(f"{metric} at the rung")
        right.set_title("promotions (orange: pruned)")
    else:
        right.axis("off")
    right.grid(alpha=0.3)
    return save_figure(fig, path)


@SECTIONS.register(ops=None, order=12)
def search_section(tree: xr.DataTree, folder: Path) -> str | None:
    """One part per search stage: its table and its plot."""
    parts = []
    for name in sorted(tree.children):
        ds = tree[name].to_dataset()
        if "search_strategy" not in ds.attrs or "status" not in ds:
            continue
        png = plot_search(name, ds, folder / f"search_{name}.png")
        parts.append("\n".join([f"## Search `{name}`", "", search_table(name, ds), "",
                                f"![{name}: metric vs energy]({png.name})"]))
    return "\n\n".join(parts) or None
