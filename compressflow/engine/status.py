"""Per-stage status tables (placeholder until the status helper's module lands)."""

from __future__ import annotations

import html
from dataclasses import dataclass, fields

__all__ = ["StageStatus", "format_status", "status_html"]


@dataclass
class StageStatus:
    stage: str
    tasks: int
    reused: int = 0
    ran: int = 0
    running: int = 0
    pending: int = 0
    failed: int = 0
    cancelled: int = 0
    energy_kwh: float = 0.0


def _cells(row: StageStatus) -> list[str]:
    return [str(getattr(row, f.name)) if f.name != "energy_kwh" else f"{row.energy_kwh:.3g}" for f in fields(row)]


def format_status(rows: list[StageStatus]) -> str:
    head = [f.name for f in fields(StageStatus)]
    return "\n".join(" ".join(c.rjust(10) for c in cells) for cells in [head, *map(_cells, rows)])


def status_html(rows: list[StageStatus]) -> str:
    head = "".join(f"<th>{f.name}</th>" for f in fields(StageStatus))
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"
