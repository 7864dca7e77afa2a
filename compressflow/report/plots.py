"""The report's one matplotlib setup (:func:`pyplot`, :func:`save_figure`), the one Pareto
front (:func:`pareto_front`, :func:`draw_pareto_front`), and the plots of a whole run, drawn
from its ledger and stage groups: accuracy vs CO₂ over every task with the Pareto front,
energy per stage, a Gantt chart of tasks per worker, how much of each stage ran in parallel
(these two: of the tasks that ran in this run, not those reused from an earlier one),
and energy against training time and epochs.

Every ``plot_*`` function returns the path of the PNG it wrote, never None: where the tree
has nothing to draw, the PNG says so and why (:func:`nothing_to_draw`), so a notebook can
always display what it gets (``IPython.display.Image(filename=str(png))``), a re-run that
reused every task included.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import xarray as xr

__all__ = ["draw_pareto_front", "nothing_to_draw", "pareto_front", "plot_energy_per_stage", "plot_energy_vs_training",
           "plot_gantt", "plot_pareto_all", "pyplot", "ran_mask", "save_figure", "stage_parallelism"]


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    # imported on first plot, not with the report: a notebook that only reads its tables keeps its own backend
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, *, tight: bool = True) -> Path:
    """Lay out (unless ``tight`` is false: a figure with a shared colorbar places its own
    axes), write and close ``fig``; returns ``path``."""
    if tight:
        fig.tight_layout()
    fig.savefig(path)
    pyplot().close(fig)
    return path


def nothing_to_draw(path: Path, title: str, reason: str) -> Path:
    """Write a small PNG that says ``title: nothing to draw`` and ``reason`` to ``path`` and
    return ``path``: what a plot function hands back where its data is missing, instead of
    None (a notebook displaying it, or a report page, then says why there is no plot)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 1.6), dpi=110)
    ax.axis("off")
    ax.text(0.5, 0.62, f"{title}: nothing to draw", ha="center", va="center", fontsize=11, weight="bold")
    ax.text(0.5, 0.3, reason, ha="center", va="center", fontsize=9, color="0.3")
    return save_figure(fig, path)


def pareto_front(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """The ``(cost, accuracy)`` points not beaten by a cheaper-or-equal, more accurate point,
    sorted by cost; points with a non-finite coordinate are left out.

    Examples
    --------
    >>> pareto_front([(1, 50), (2, 40), (3, 70), (3, 60), (float("nan"), 99)])
    [(1, 50), (3, 70)]
    """
    front, best = [], -np.inf
    for x, y in sorted((p for p in points if np.isfinite(p[0]) and np.isfinite(p[1])), key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def draw_pareto_front(ax, points: Iterable[tuple[float, float]], **style) -> None:
    """Draw :func:`pareto_front` of ``points`` on ``ax`` as a step line labelled "Pareto front"
    (``style``: matplotlib line keywords, e.g. ``color``, ``ls``)."""
    front = pareto_front(points)
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", lw=1, label="Pareto front", **style)


def _ledger(tree: xr.DataTree) -> xr.Dataset:
    return tree["tasks"].to_dataset()


def ran_mask(ledger: xr.Dataset) -> np.ndarray:
    """True for the ledger's tasks that ran in this run, False for those whose record was
    reused from an earlier one (results written before ``reused`` existed: all ran)."""
    if "reused" not in ledger:
        return np.ones(ledger.sizes["task"], dtype=bool)
    return ~ledger["reused"].values.astype(bool)


def _stage_colors(stages: list[str]) -> dict[str, str]:
    return {s: f"C{i % 10}" for i, s in enumerate(stages)}


def _task_accuracy(tree: xr.DataTree) -> dict[str, float]:
    """Task key -> test accuracy of the model the task trained (stages that record
    ``train_flops``; an evaluation's accuracy belongs to the model, not to its cost)."""
    out: dict[str, float] = {}
    for name in tree.children:
        ds = tree[name].to_dataset()
        if "train_flops" in ds and "accuracy" in ds and "task_key" in ds and ds["accuracy"].dims == ds["task_key"].dims:
            for key, acc in zip(np.ravel(ds["task_key"].values), np.ravel(ds["accuracy"].values)):
                if isinstance(key, str) and key and np.isfinite(acc):
                    out[key] = float(acc)
    return out


def plot_pareto_all(tree: xr.DataTree, path: Path) -> Path:
    """Test accuracy vs gCO₂ of every task that trained a scored model, by stage, and the
    Pareto front (most accurate for its CO₂); :func:`nothing_to_draw` when no task has both."""
    ledger = _ledger(tree)
    acc = _task_accuracy(tree)
    keys = [k for k in ledger.task.values if k in acc]
    if not keys:
        return nothing_to_draw(path, "Accuracy vs CO₂", "no task trained a model with a test accuracy")
    plt = pyplot()
    sub = ledger.sel(task=keys)
    stages = list(dict.fromkeys(sub.stage.values.tolist()))
    colors = _stage_colors(stages)
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    for stage in stages:
        m = sub.stage.values == stage
        ax.scatter(sub.co2_g.values[m], [100 * acc[k] for k in sub.task.values[m]], s=22, alpha=0.8,
                   color=colors[stage], label=stage)
    draw_pareto_front(ax, zip(sub.co2_g.values.tolist(), [100 * acc[k] for k in sub.task.values]), color="k")
    ax.set_xscale("log")
    ax.set_xlabel("CO₂ of the task (g CO₂eq)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path)


def plot_energy_per_stage(tree: xr.DataTree, path: Path) -> Path:
    """Summed task energy per stage (kWh), split into CPU, GPU and RAM."""
    ledger = _ledger(tree)
    stages = list(dict.fromkeys(ledger.stage.values.tolist()))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 0.35 * len(stages) + 1.5), dpi=110)
    left = np.zeros(len(stages))
    for part, color in (("cpu_kwh", "C0"), ("gpu_kwh", "C2"), ("ram_kwh", "C1")):
        vals = np.array([np.nansum(ledger[part].values[ledger.stage.values == s]) for s in stages])
        ax.barh(stages, vals, left=left, color=color, label=part.replace("_kwh", "").upper())
        left += vals
    ax.invert_yaxis()
    ax.set_xlabel("energy (kWh, summed over the stage's tasks)")
    ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path)


def plot_gantt(tree: xr.DataTree, path: Path) -> Path:
    """One lane per worker; each task that ran in this run a bar from its start to its end,
    coloured by stage. Reused tasks ran earlier, maybe on another cluster's workers: they are
    not drawn, and the title says how many. When no task ran in this run (a re-run that
    reused every task), the reused tasks are drawn instead, hatched, at the start and end
    their earlier run recorded, and the title says so; :func:`nothing_to_draw` when no task
    has a recorded start and end."""
    ledger = _ledger(tree)
    ran = ran_mask(ledger)
    timed = ~np.isnat(ledger.start.values) & ~np.isnat(ledger.end.values)
    if (ran & timed).any():
        shown, hatch = ran & timed, None
        hidden = int((~ran).sum())
        title = f"{hidden} task{'s' if hidden > 1 else ''} reused from earlier runs not drawn" if hidden else ""
    elif timed.any():
        shown, hatch = timed, "//"
        n = int(shown.sum())
        they = "they" if n > 1 else "it"
        title = f"no task ran in this run: {n} reused task{'s' if n > 1 else ''}, drawn as {they} ran earlier"
    else:
        return nothing_to_draw(path, "Tasks per worker", "no task has a recorded start and end")
    sub = ledger.isel(task=shown)
    t0 = sub.start.values.min()
    workers = sorted(set(sub.worker.values.tolist()))
    stages = list(dict.fromkeys(sub.stage.values.tolist()))
    colors = _stage_colors(stages)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(workers) + 1.8), dpi=110)
    for i, w in enumerate(workers):
        m = sub.worker.values == w
        starts = (sub.start.values[m] - t0) / np.timedelta64(1, "s")
        ends = (sub.end.values[m] - t0) / np.timedelta64(1, "s")
        ax.barh([i] * int(m.sum()), ends - starts, left=starts, height=0.6, edgecolor="white", linewidth=0.4,
                color=[colors[s] for s in sub.stage.values[m]], hatch=hatch)
    ax.set_yticks(range(len(workers)), [w.rsplit("/", 1)[-1] for w in workers], fontsize=8)
    ax.set_xlabel("seconds since the first task started")
    if title:
        ax.set_title(title, fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[s]) for s in stages]
    ax.legend(handles, stages, fontsize=7, ncol=min(4, len(stages)), loc="upper center", bbox_to_anchor=(0.5, -0.25))
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path)


def stage_parallelism(tree: xr.DataTree) -> list[tuple[str, ...]]:
    """Per stage with more than one task: wall time (first start to last end), summed task
    time, their ratio (the speedup the stage got from running tasks side by side) and that
    ratio over the workers it used (efficiency). Only tasks that ran in this run count (a
    reused task's times are those of an earlier run)."""
    ledger = _ledger(tree)
    ledger = ledger.isel(task=ran_mask(ledger))
    rows: list[tuple[str, ...]] = [("stage", "tasks", "workers", "wall s", "task time s", "parallel speedup", "efficiency")]
    for stage in dict.fromkeys(ledger.stage.values.tolist()):
        sub = ledger.isel(task=ledger.stage.values == stage)
        if sub.sizes["task"] < 2 or np.isnat(sub.start.values).any():
            continue
        wall = float((sub.end.values.max() - sub.start.values.min()) / np.timedelta64(1, "s"))
        busy = float(sub.duration_s.sum())
        n = len(set(sub.worker.values.tolist()))
        rows.append((stage, str(sub.sizes["task"]), str(n), f"{wall:.1f}", f"{busy:.1f}", f"{busy / wall:.2f}",
                     f"{busy / wall / n:.2f}"))
    return rows


def plot_energy_vs_training(tree: xr.DataTree, path: Path) -> Path:
    """Cumulative energy of every training task against its epochs and against its wall
    time, one line per task (the meter is read at the end of each epoch; the 2024 carbon
    report found both linear); :func:`nothing_to_draw` when no task recorded an energy curve."""
    curves = []
    for name in tree.children:
        ds = tree[name].to_dataset()
        if "energy_curve_kwh" not in ds or "elapsed_curve_s" not in ds:
            continue
        energy = ds["energy_curve_kwh"].transpose(..., "epoch")
        elapsed = ds["elapsed_curve_s"].transpose(..., "epoch")
        epochs = energy["epoch"].values
        for e, t in zip(energy.values.reshape(-1, len(epochs)), elapsed.values.reshape(-1, len(epochs))):
            ok = np.isfinite(e) & np.isfinite(t)
            if ok.sum() >= 1:
                curves.append((name, epochs[ok], t[ok], 1e3 * e[ok]))
    if not curves:
        return nothing_to_draw(path, "Energy vs epoch and vs time", "no task recorded a per-epoch energy curve")
    plt = pyplot()
    colors = _stage_colors(list(dict.fromkeys(c[0] for c in curves)))
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    seen = set()
    for stage, epochs, elapsed, wh in curves:
        label = None if stage in seen else stage
        seen.add(stage)
        a.plot(epochs, wh, marker=".", color=colors[stage], alpha=0.7, label=label)
        b.plot(elapsed, wh, marker=".", color=colors[stage], alpha=0.7)
    a.set_xlabel("epoch")
    b.set_xlabel("wall time since training started (s)")
    for ax in (a, b):
        ax.set_ylabel("cumulative energy (Wh)")
        ax.grid(alpha=0.3)
    a.legend(fontsize=7)
    return save_figure(fig, path)
