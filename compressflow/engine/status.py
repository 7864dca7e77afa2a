"""Where a study stands, per stage: how many tasks were reused from an earlier run, ran in
the latest one, are running, pending, failed or cancelled, and the energy of what ran.

:class:`StageStatus` is one row; :func:`format_status` and :func:`status_html` show rows as
a text or HTML table. :func:`status_from_rundir` builds the rows without any cluster, from
what the run directory keeps (``compressflow status``); :func:`status_from_ledger` from a
results ledger (``/tasks``); the live handle (:func:`compressflow.submit`) from its
futures and events.

Reading a run directory (through :class:`compressflow.rundir.RunDir`, which knows its layout):

* a task with a trusted record (status ``ok``, its key, its digest, its artifact) is
  finished: *ran* when it ended after the latest run started (the time in ``.lock``), else
  *reused*;
* otherwise its last attempt (its attempt log) decides: still open and the lock held
  (a run is live) → *running*; open without a live run → *pending* (its worker was killed);
  ended ``failed`` / ``cancelled`` → *failed* / *cancelled* (while a run is live, only an
  attempt of that run counts: an older failure runs again);
* a task that never started whose single upstream task failed or was cancelled counts as
  failed (``upstream_failed``) or cancelled; every other task is *pending*.

Energy (the ``kWh`` column) is what the stage's results cost: the recorded energy of every
finished task, reused ones included (spent in whichever run produced them), plus what the
latest run spent on the tasks without a result (the attempts of that run).

A live study (:func:`status_of_graph`) also shows the tasks of a stage cancelled with
:meth:`Study.cancel <compressflow.api.study.Study.cancel>` that had not started, and those
downstream of them, as *cancelled* at once: none of them will run.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compressflow.rundir import RunDir, RunState

if TYPE_CHECKING:  # only for annotations: reading a run directory needs neither
    import xarray as xr

    from compressflow.engine.graph import TaskGraph
    from compressflow.rundir.records import LedgerEntry
    from compressflow.spec import PipelineSpec

__all__ = ["StageStatus", "StatusTable", "format_status", "status_from_ledger", "status_from_rundir", "status_html",
           "status_of_graph", "study_html", "study_line", "tasks_line", "total"]

#: the columns of a status table, after ``stage``: StageStatus fields and their headers
COLUMNS = ("tasks", "reused", "ran", "running", "pending", "failed", "cancelled")
#: task states → the StageStatus count they add to (``upstream_failed`` counts as failed)
STATES = {"reused": "reused", "ran": "ran", "ok": "ran", "running": "running", "pending": "pending",
          "failed": "failed", "upstream_failed": "failed", "cancelled": "cancelled"}


@dataclass
class StageStatus:
    """One stage's tasks by state.

    Parameters
    ----------
    stage : str
        The stage name (or ``"total"``).
    tasks : int
        Its tasks (distinct keys).
    reused : int
        Finished in an earlier run (not run again).
    ran : int
        Finished ``ok`` in this (the latest) run.
    running, pending : int
        Started and not ended; not started (or to start again).
    failed : int
        ``failed`` and ``upstream_failed``.
    cancelled : int
        Cancelled (stopped at an epoch boundary, or never started).
    energy_kwh : float
        IT energy of the stage's results, as far as it is known: recorded energy of its
        finished tasks (reused ones included) plus the latest run's spending on the others.

    Examples
    --------
    >>> StageStatus.from_counts("kd", {"reused": 2, "ran": 1, "upstream_failed": 1})
    StageStatus(stage='kd', tasks=4, reused=2, ran=1, running=0, pending=0, failed=1, cancelled=0, energy_kwh=0.0)
    """

    stage: str
    tasks: int
    reused: int = 0
    ran: int = 0
    running: int = 0
    pending: int = 0
    failed: int = 0
    cancelled: int = 0
    energy_kwh: float = 0.0

    @classmethod
    def from_counts(cls, stage: str, counts: Mapping[str, int], energy_kwh: float = 0.0) -> StageStatus:
        """A row from task counts per state (e.g. a ``collections.Counter`` of states):
        ``reused``, ``ran`` (or ``ok``), ``running``, ``pending``, ``failed``,
        ``upstream_failed`` (counted as failed), ``cancelled``; ``tasks`` is their sum.

        Raises
        ------
        ValueError
            An unknown state, naming the valid ones.
        """
        row = cls(stage, 0, energy_kwh=float(energy_kwh))
        for state, n in counts.items():
            if state not in STATES:
                raise ValueError(f"unknown task state {state!r}; valid states: {', '.join(STATES)}")
            setattr(row, STATES[state], getattr(row, STATES[state]) + int(n))
            row.tasks += int(n)
        return row

    @property
    def finished(self) -> int:
        """Tasks with a result: reused + ran."""
        return self.reused + self.ran


def total(rows: Iterable[StageStatus], stage: str = "total") -> StageStatus:
    """The sum of ``rows`` (energy: of the known values)."""
    out = StageStatus(stage, 0)
    for row in rows:
        for name in COLUMNS:
            setattr(out, name, getattr(out, name) + getattr(row, name))
        if math.isfinite(row.energy_kwh):
            out.energy_kwh += row.energy_kwh
    return out


class StatusTable(list[StageStatus]):
    """Per-stage rows (a ``list`` of :class:`StageStatus`) that print as the table of
    ``compressflow status`` (:func:`format_status`) and show as an HTML table in a notebook
    (:func:`status_html`); :attr:`total` sums them.

    Examples
    --------
    >>> StatusTable([StageStatus("teacher", 1, reused=1, energy_kwh=3e-5)])
    stage    tasks  reused  ran  running  pending  failed  cancelled    kWh
    teacher      1       1    0        0        0       0          0  3e-05
    total        1       1    0        0        0       0          0  3e-05
    """

    def __repr__(self) -> str:
        return format_status(self)

    __str__ = __repr__

    def _repr_html_(self) -> str:
        return status_html(self)

    @property
    def total(self) -> StageStatus:
        """The sum of the rows (:func:`total`)."""
        return total(self)


def tasks_line(rows: Iterable[StageStatus]) -> str:
    """``tasks: reused 12, ran 3`` (and running / pending / failed / cancelled when there are
    any): the one line that ends a run (``compressflow run``, :func:`compressflow.run`).

    Examples
    --------
    >>> tasks_line([StageStatus("a", 3, reused=3), StageStatus("b", 2, ran=1, cancelled=1)])
    'tasks: reused 3, ran 1, cancelled 1'
    """
    t = total(rows)
    extra = "".join(f", {name} {getattr(t, name)}" for name in ("running", "pending", "failed", "cancelled")
                    if getattr(t, name))
    return f"tasks: reused {t.reused}, ran {t.ran}{extra}"


def study_line(name: str, state: str, rows: Iterable[StageStatus]) -> str:
    """``compressflow: study 'quickstart' done: tasks: reused 2, ran 0``: how a study ended
    (:func:`compressflow.run` adds where its results are).

    Examples
    --------
    >>> study_line("quickstart", "done", [StageStatus("teacher", 1, reused=1)])
    "compressflow: study 'quickstart' done: tasks: reused 1, ran 0"
    """
    return f"compressflow: study {name!r} {state}: {tasks_line(rows)}"


def _cells(row: StageStatus) -> list[str]:
    return [row.stage, *(str(getattr(row, c)) for c in COLUMNS), f"{row.energy_kwh:.3g}"]


def format_status(rows: list[StageStatus]) -> str:
    """``rows`` and their total as a fixed-width text table (numbers right-aligned; ``kWh``:
    the energy of the results, reused tasks' recorded energy included).

    Examples
    --------
    >>> print(format_status([StageStatus("teacher", 1, ran=1, energy_kwh=3e-5)]))
    stage    tasks  reused  ran  running  pending  failed  cancelled    kWh
    teacher      1       0    1        0        0       0          0  3e-05
    total        1       0    1        0        0       0          0  3e-05
    """
    table = [["stage", *COLUMNS, "kWh"], *(_cells(r) for r in rows), _cells(total(rows))]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    return "\n".join("  ".join([r[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(r[1:], widths[1:]))]).rstrip()
                     for r in table)


def status_html(rows: list[StageStatus]) -> str:
    """``rows`` and their total as an HTML table (stage names escaped), for a notebook's
    ``_repr_html_``."""
    def tr(cells: list[str], tag: str) -> str:
        return "<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>"

    head = tr(["stage", *COLUMNS, "kWh"], "th")
    body = "".join(tr(_cells(r), "td") for r in rows)
    return (f'<table class="compressflow-status"><thead>{head}</thead><tbody>{body}</tbody>'
            f"<tfoot>{tr(_cells(total(rows)), 'th')}</tfoot></table>")


def study_html(name: str, state: str, out: str, link: str | None, rows: list[StageStatus]) -> str:
    """A study's heading (name, state, run directory, a link to its dashboard page) above its
    :func:`status_html` table: the notebook view of a :class:`~compressflow.api.study.Study`."""
    dash = f' · <a href="{html.escape(link)}" target="_blank">dashboard</a>' if link else ""
    return (f"<div><b>compressflow study {html.escape(name)}</b> — {html.escape(state)} · "
            f"out <code>{html.escape(out)}</code>{dash}</div>{status_html(rows)}")


def status_from_rundir(spec: PipelineSpec | str | Path | dict, out: Path | str) -> StatusTable:
    """Per-stage status of ``spec`` from its run directory ``out``, without a cluster (rules
    in this module's docstring). A run directory that does not exist: every task pending.

    Parameters
    ----------
    spec : PipelineSpec, path or mapping
        The study (its plugins imported, see :func:`compressflow.load_spec`).
    out : path
        Its run directory.

    Returns
    -------
    StatusTable
        One row per stage, in dependency order.

    Raises
    ------
    InputError
        Bad spec, or ``out`` (or its ``records``/``attempts``/``.lock``) is not what
        compressflow keeps there.
    """
    from compressflow.engine.graph import expand
    from compressflow.spec import load_spec

    spec = load_spec(spec)
    stages = expand(spec)
    run = RunDir(out)
    run.check_parts()
    state = run.state() if run.root.exists() else RunState(False, None, "")
    status: dict[str, str] = {}  # key -> state
    energy: dict[str, float] = {}
    rows = []
    for stage, nodes in stages.items():
        counts: dict[str, int] = {}
        kwh = 0.0
        if spec.stages[stage].search is not None:  # its tasks exist once the search asked for them
            rows.append(_search_status(run, stage))
            continue
        for node in {n.key: n for n in nodes}.values():  # a stage's identical nodes are one task
            if node.key not in status:
                status[node.key], energy[node.key] = _task_state(run, node, state, status)
            counts[status[node.key]] = counts.get(status[node.key], 0) + 1
            kwh += energy[node.key]
        rows.append(StageStatus.from_counts(stage, counts, kwh))
    return StatusTable(rows)


def _search_status(run: RunDir, stage: str) -> StageStatus:
    """A search stage's finished tasks (its trials' rungs) from the records that name it: which
    trials are still to come only the search knows, so nothing is pending here."""
    counts: dict[str, int] = {}
    kwh = 0.0
    for key in run.record_keys():
        entry = run.finished(key, metrics=False)
        if entry is None or entry.stage != stage:
            continue
        counts["ran"] = counts.get("ran", 0) + 1
        kwh += _known(entry.energy.get("energy_kwh"))
    return StageStatus.from_counts(stage, counts, kwh)


def _task_state(run: RunDir, node: Any, state: RunState, known: Mapping[str, str]) -> tuple[str, float]:
    """(state, kWh) of one task: a finished one's recorded energy, else what the latest run spent."""
    since = state.started if state.started is not None else -math.inf
    record = run.finished(node.key, metrics=False)
    if record is not None:
        return ("ran" if record.end >= since else "reused"), _known(record.energy.get("energy_kwh"))
    attempts = run.attempts(node.key)
    spent = sum(a.kwh for a in attempts if a.started >= since)
    if attempts:
        last = attempts[-1]
        if last.status == "":
            return ("running" if state.live and last.started >= since else "pending"), spent
        if last.status in ("failed", "cancelled") and (not state.live or last.started >= since):
            return last.status, spent
        return "pending", spent
    for up in (k for k in node.needs.values() if isinstance(k, str)):  # fan-in inputs take failures as data
        if known.get(up) in ("failed", "upstream_failed"):
            return "upstream_failed", spent
        if known.get(up) == "cancelled":
            return "cancelled", spent
    return "pending", spent


def _known(value: Any) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return 0.0
    return value if math.isfinite(value) else 0.0


def status_of_graph(graph: TaskGraph, done: Mapping[str, LedgerEntry], running: Collection[str],
                    cancelled: Collection[str] = ()) -> StatusTable:
    """Per-stage status of a live study (:class:`~compressflow.api.study.Study`): its graph (a
    search stage: every rung of every trial asked so far), the entries of the tasks that
    finished in this run, the keys of those running and the ``cancelled`` stages, whose tasks
    not started (and those downstream of them) count as cancelled. Energy: reused tasks'
    recorded energy plus the entries' (see the module docstring)."""
    rows = []
    state: dict[str, str] = {}  # key -> state, in dependency order (stages are)
    for stage, nodes in graph.stages.items():
        if graph.spec.stages[stage].search is not None:
            nodes = [n for search in graph.searches if search.stage == stage for n in search.history]
        counts: Counter[str] = Counter()
        kwh = 0.0
        for node in {n.key: n for n in nodes}.values():  # a task shared by two sweep points counts once
            key = node.key
            entry = graph.reused.get(key) or done.get(key)
            if entry is not None:
                state[key] = "reused" if key in graph.reused else "ran" if entry.ok else entry.status
                kwh += _known(entry.energy.get("energy_kwh"))
            elif key in running:
                state[key] = "running"
            elif stage in cancelled or any(state.get(up) == "cancelled" for up in node.needs.values()
                                           if isinstance(up, str)):
                state[key] = "cancelled"  # it will end so, without starting
            else:
                state[key] = "pending"
            counts[state[key]] += 1
        rows.append(StageStatus.from_counts(stage, counts, kwh))
    return StatusTable(rows)


def status_from_ledger(ledger: xr.Dataset) -> StatusTable:
    """Per-stage status of a finished run from its ledger (``tree["tasks"]``): ``ok`` tasks are
    reused or ran (variable ``reused``; results written before it existed: all ran), the
    others by their status. Energy: of every task, reused ones included (their recorded
    energy)."""
    n = ledger.sizes["task"]
    reused = ledger["reused"].values.astype(bool) if "reused" in ledger else [False] * n
    stages = ledger["stage"].values.tolist()
    statuses = ledger["status"].values.tolist()
    kwh = ledger["energy_kwh"].values.tolist() if "energy_kwh" in ledger else [0.0] * n
    counts: dict[str, dict[str, int]] = {}
    energy: dict[str, float] = {}
    for stage, st, r, e in zip(stages, statuses, reused, kwh):
        state = ("reused" if r else "ran") if st == "ok" else st if st in STATES else "pending"
        counts.setdefault(stage, {})
        counts[stage][state] = counts[stage].get(state, 0) + 1
        energy[stage] = energy.get(stage, 0.0) + _known(e)
    return StatusTable(StageStatus.from_counts(s, c, energy[s]) for s, c in counts.items())

