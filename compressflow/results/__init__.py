"""Task records → one labelled :class:`xarray.DataTree`, written to Zarr.

Layout: ``/tasks`` is the ledger (dimension ``task``, one entry per task); ``/<stage>`` holds
that stage's metrics with its sweep axes as dimensions. Every variable has ``units`` in its
attrs. The store opens with plain ``xarray.open_datatree(path, engine="zarr")``.

A recorded variable (or dimension) whose name is also a dimension of its stage group (a sweep
axis: e.g. ``prune``'s achieved ``sparsity`` when ``sparsity`` is swept), or one of the names
the group adds from the ledger (``status``, ``duration_s``, ``energy_kwh``, ``co2_g``,
``task_key``), is kept as ``<name>_recorded`` with ``attrs["recorded_name"] = <name>``; the
group's ``attrs["renamed"]`` (JSON) maps every renamed variable back to its recorded name."""

from __future__ import annotations

import numpy as np
import xarray as xr

from compressflow.results.build import LEDGER_GROUP, RECORDED_SUFFIX, STAGE_LEDGER, build_results
from compressflow.results.store import STORE_MARKER, check_results_store, open_results, save_results

__all__ = ["LEDGER_GROUP", "RECORDED_SUFFIX", "STAGE_LEDGER", "STORE_MARKER", "build_results", "check_results_store",
           "open_results", "save_results", "summary_rows", "summary_table"]


def summary_rows(tree: xr.DataTree) -> list[tuple[str, ...]]:
    """Header + one row per stage: stage, op, tasks ok/total, accuracy, time, kWh, gCO₂."""
    ledger = tree["tasks"].to_dataset()
    rows = [("stage", "op", "tasks", "accuracy", "time_s", "kWh", "gCO2")]
    for stage in dict.fromkeys(ledger.stage.values.tolist()):
        sel = ledger.isel(task=np.asarray(ledger.stage.values == stage))
        group = tree[stage].to_dataset() if stage in tree.children else xr.Dataset()
        rows.append(
            (
                stage,
                str(sel.op.values[0]),
                f"{int((sel.status == 'ok').sum())}/{sel.sizes['task']}",
                _accuracy_text(group),
                f"{float(sel.duration_s.sum()):.1f}",
                f"{float(sel.energy_kwh.sum()):.3g}",
                f"{float(sel.co2_g.sum()):.3g}",
            )
        )
    return rows


def summary_table(tree: xr.DataTree) -> str:
    """:func:`summary_rows` as a fixed-width text table."""
    rows = summary_rows(tree)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _accuracy_text(group: xr.Dataset) -> str:
    if "accuracy" not in group:
        return "-"
    acc = group["accuracy"].values.astype(float).ravel()
    acc = acc[np.isfinite(acc)]
    if acc.size == 0:
        return "-"
    if acc.size == 1:
        return f"{acc[0]:.4f}"
    return f"{acc.mean():.4f} (max {acc.max():.4f}, n={acc.size})"
