"""Tables of a run's results: Markdown pipe tables for the report and the fixed-width stage
summary that ``compressflow run`` prints."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

__all__ = ["markdown_table", "summary_rows", "summary_table"]


def markdown_table(rows: Sequence[Sequence[str]]) -> str:
    """The first row as header, the rest as body."""
    head, *body = rows
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def summary_rows(tree: xr.DataTree, *, reuse: bool = False) -> list[tuple[str, ...]]:
    """Header + one row per stage: stage, op, tasks ok/total, accuracy, time, kWh, gCO₂.

    With ``reuse``, two columns after ``tasks``: ``reused`` (finished in an earlier run) and
    ``ran`` (finished ok in this run); results written before the ledger's ``reused``
    variable count every task as run. Time, kWh and gCO₂ are of all tasks, reused ones
    included (spent when they ran)."""
    ledger = tree["tasks"].to_dataset()
    head = ("stage", "op", "tasks", *(("reused", "ran") if reuse else ()), "accuracy", "time_s", "kWh", "gCO2")
    rows: list[tuple[str, ...]] = [head]
    reused = ledger["reused"].values.astype(bool) if "reused" in ledger else np.zeros(ledger.sizes["task"], bool)
    for stage in dict.fromkeys(ledger.stage.values.tolist()):
        mask = np.asarray(ledger.stage.values == stage)
        sel = ledger.isel(task=mask)
        group = tree[stage].to_dataset() if stage in tree.children else xr.Dataset()
        ok = sel.status.values == "ok"
        counts = (str(int((ok & reused[mask]).sum())), str(int((ok & ~reused[mask]).sum()))) if reuse else ()
        rows.append(
            (
                stage,
                str(sel.op.values[0]),
                f"{int(ok.sum())}/{sel.sizes['task']}",
                *counts,
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


#: stage metrics the summary's score column shows, first present wins, with their prefix
_SCORES = (("accuracy", ""), ("map_50", "mAP50 "))


def _accuracy_text(group: xr.Dataset) -> str:
    """The stage's test accuracy, or a detection stage's test mAP@0.5 (prefixed ``mAP50``):
    one value, or the mean with the max and count over a sweep; ``-`` when it has neither."""
    name, prefix = next(((n, p) for n, p in _SCORES if n in group), ("", ""))
    if not name:
        return "-"
    acc = group[name].values.astype(float).ravel()
    acc = acc[np.isfinite(acc)]
    if acc.size == 0:
        return "-"
    if acc.size == 1:
        return f"{prefix}{acc[0]:.4f}"
    return f"{prefix}{acc.mean():.4f} (max {acc.max():.4f}, n={acc.size})"
