"""The dashboard page's state read from run directories instead of a scheduler's events, so
a study stays browsable after it ended (``compressflow dashboard OUT...``, :mod:`.serve`).

Each run directory is one :class:`~compressflow.dashboard._state.StudyView`, built from:

* ``OUT/results.zarr`` when it exists (:func:`compressflow.results.open_results`): every
  task of the ledger ``/tasks`` with its stage, status, ``reused`` flag and kWh, the carbon
  factors of its attrs, and the accuracies and per-epoch curves (``val_accuracy_curve``,
  ``energy_curve_kwh``) of the stage groups;
* the finished records ``OUT/records/<key>.json`` (:class:`compressflow.rundir.RunDir`), read
  on top: a task that finished after the store was written (a run still going, or one that
  was killed before writing its results) shows as ``ok``. Without a store the records are all
  there is: tasks that have not finished are not known, the study's name is the folder's,
  the carbon intensity that of the records' country and the PUE 1 (the spec's PUE is in the
  store). A record that ended before the latest run started was reused by that run, as
  ``compressflow status`` counts it.

:class:`RunDirBoard` re-reads its run directories at most every ``refresh_s`` seconds, and
then only what changed (a new store, new or rewritten record files), so a page polling every
second follows a run that is still going. Nothing here imports torch or Dask.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from compressflow.dashboard._state import Board, StudyView, _Task
from compressflow.energy.carbon import carbon_intensity
from compressflow.engine.events import task_summary
from compressflow.errors import InputError, printable
from compressflow.rundir import RunDir

__all__ = ["RunDirBoard", "check_run_dir", "study_view"]

log = logging.getLogger("compressflow.dashboard")

_LEDGER_STATES = {"ok": "ok", "failed": "failed", "upstream_failed": "failed", "cancelled": "cancelled"}
_CURVES = ("val_accuracy_curve", "energy_curve_kwh")


def check_run_dir(path: str | os.PathLike[str]) -> RunDir:
    """The run directory ``path`` names (a ``results.zarr`` path names its folder), refused in
    one line when it is not one.

    Raises
    ------
    InputError
        ``path`` does not exist (with the run directories of similar names), is not a folder,
        holds nothing of a run directory's (with the run directories inside it), or its parts
        are not what compressflow keeps there.
    """
    text = os.fspath(path)
    if "\0" in text:
        raise InputError(f"dashboard: {printable(text)} holds a NUL byte, which no path can; give a run directory")
    root = Path(text)
    if root.name == "results.zarr" and root.is_dir():  # the store itself: its run directory
        root = root.parent
    if not root.exists():
        hint = _similar(root)
        raise InputError(f"dashboard: {printable(text)} does not exist; give a run directory (the --out of "
                         f"`compressflow run`){hint}")
    if not root.is_dir():
        raise InputError(f"dashboard: {printable(text)} is a file, not a run directory; give the --out of "
                         f"`compressflow run` (a folder holding records/ and results.zarr)")
    run = RunDir(root)
    if not any(os.path.lexists(root / name) for name in RunDir.MARKERS):
        inside = sorted(str(p) for p in root.iterdir() if _is_run_dir(p))[:5] if os.access(root, os.R_OK) else []
        hint = f"; did you mean {' or '.join(map(printable, inside))}?" if inside else ""
        raise InputError(f"dashboard: {printable(text)} is not a compressflow run directory (it has no records/ "
                         f"and no results.zarr); give the --out of `compressflow run`{hint}")
    try:
        run.check_parts(("records", "attempts"))
        run.state()  # a lock that is not a file is refused now, not at every poll
    except InputError as exc:
        raise InputError(f"dashboard: {str(exc).removeprefix('--out: ')}") from None
    return run


def _is_run_dir(path: Path) -> bool:
    return path.is_dir() and any(os.path.lexists(path / name) for name in ("records", "results.zarr"))


def _similar(root: Path) -> str:
    """``; did you mean 'runs/quickstart'?`` for a missing ``runs/quickstrat`` (run directories
    beside it only), else empty."""
    parent = root.parent
    try:
        names = [p.name for p in parent.iterdir() if _is_run_dir(p)]
    except OSError:
        return ""
    close = difflib.get_close_matches(root.name, names, n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(printable(parent / n) for n in close)}?" if close else ""


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _curve(epochs: Any, acc: Any, kwh: Any) -> list[tuple[int, float, float]]:
    """(epoch, val_accuracy, kWh) of the epochs with any value (a shorter curve in a stage
    group is padded with NaN)."""
    epochs, acc, kwh = (np.asarray(a, dtype=float).ravel() for a in (epochs, acc, kwh))
    return [(int(e), float(a), float(k)) for e, a, k in zip(epochs, acc, kwh) if math.isfinite(a) or math.isfinite(k)]


def _record_curve(metrics: Any) -> list[tuple[int, float, float]]:
    if metrics is None or _CURVES[0] not in metrics or metrics[_CURVES[0]].dims != ("epoch",):
        return []
    acc = metrics[_CURVES[0]]
    kwh = metrics[_CURVES[1]] if _CURVES[1] in metrics and metrics[_CURVES[1]].dims == ("epoch",) else acc * np.nan
    epochs = acc["epoch"].values if "epoch" in acc.coords else np.arange(1, acc.size + 1)
    return _curve(epochs, acc.values, kwh.values)


class _Source:
    """One run directory, its store and records cached by what their files look like on disk."""

    def __init__(self, run: RunDir, study: str) -> None:
        self.run, self.study = run, study
        self.store_stamp: tuple[int, int] | None = None
        self.store: dict[str, Any] | None = None  # name, pue, intensity, stages, tasks (key -> _Task)
        self.records: dict[str, tuple[tuple[int, int, int], _Task | None, str]] = {}  # key -> (stamp, task, country)

    def read(self) -> StudyView:
        self._read_store()
        self._read_records()
        return self._view()

    def _read_store(self) -> None:
        try:
            st = os.stat(self.run.results)
        except FileNotFoundError:  # none yet; or, seen before, being replaced: the last one stands until then
            return
        stamp = (st.st_ino, st.st_mtime_ns)  # the store is replaced as a whole (a new folder)
        if stamp == self.store_stamp:
            return
        from compressflow.results import open_results

        try:
            self.store = _from_store(open_results(self.run.root))
        except InputError as exc:
            raise InputError(f"dashboard: {exc}") from None
        except (KeyError, ValueError, TypeError) as exc:  # a store of ours whose layout this reader does not know
            raise InputError(f"dashboard: cannot read the results {printable(self.run.results)} "
                             f"({type(exc).__name__}: {exc})") from None
        self.store_stamp = stamp

    def _read_records(self) -> None:
        """The finished records, parsed once per file version; those of tasks the store has
        finished already are not parsed at all (the store holds their numbers)."""
        folder = self.run.root / "records"
        done = {k for k, t in self.store["tasks"].items() if t.state in ("ok", "reused")} if self.store else set()
        seen = {}
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            entries = []
        for entry in entries:
            if not entry.name.endswith(".json") or entry.name.startswith("."):
                continue
            key = entry.name[:-len(".json")]
            if key in done:
                continue
            try:
                st = entry.stat()
            except OSError:  # gone since the listing
                continue
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            cached = self.records.get(key)
            seen[key] = cached if cached is not None and cached[0] == stamp else (stamp, *self._record(key))
        self.records = seen

    def _record(self, key: str) -> tuple[_Task | None, str]:
        done = self.run.finished(key)  # trusted and ok, else None (torn, edited, unsigned)
        if done is None:
            return None, ""
        summary = task_summary(done)
        task = _Task(key, done.stage, "ok", _number(summary["energy_kwh"]), _number(summary["accuracy"]),
                     _number(summary["val_accuracy"]), done.worker, float(done.end),
                     _record_curve(done.record.metrics if done.record is not None else None))
        return task, str(done.energy.get("country", ""))

    def _view(self) -> StudyView:
        store = self.store
        if store is not None:
            tasks = {k: _copy(t) for k, t in store["tasks"].items()}
            stages = {s: list(keys) for s, keys in store["stages"].items()}
            name, pue, intensity = store["name"], store["pue"], store["intensity"]
        else:
            tasks, stages = {}, {}
            name, pue, intensity = self.run.root.resolve().name, 1.0, self._records_intensity()
        since = -math.inf
        if store is None and self.records:  # reused by the latest run: ended before it started
            try:
                started = self.run.state().started
            except InputError:  # the lock was replaced by something else since the start: no run
                started = None
            since = started if started is not None else -math.inf
        newest = sorted((t for _, t, _ in self.records.values() if t is not None), key=lambda t: t.ended)
        for record in newest:
            known = tasks.get(record.key)
            if known is not None and known.state in ("ok", "reused"):
                continue  # in the store already
            task = _copy(record)
            if store is None and task.ended < since:
                task.state = "reused"
            if known is not None:  # pending or failed in the store: it finished since
                task.stage = known.stage
            else:
                stages.setdefault(task.stage, []).append(task.key)
            tasks[task.key] = task
        return StudyView(self.study, name, str(self.run.root), stages, intensity, pue, tasks)

    def _records_intensity(self) -> float:
        country = next((c for _, t, c in self.records.values() if t is not None and c), "")
        try:
            return carbon_intensity(country) if country else math.nan
        except InputError:
            return math.nan


def _copy(task: _Task) -> _Task:
    return _Task(task.key, task.stage, task.state, task.energy_kwh, task.accuracy, task.val_accuracy, task.worker,
                 task.ended, list(task.curve))


def _from_store(tree: Any) -> dict[str, Any]:
    """The ledger's tasks (stage, state, kWh, end) with the accuracies and curves of their
    stage groups, the stages in the spec's order and the carbon factors of the results."""
    ledger = tree["tasks"].to_dataset()
    n = ledger.sizes["task"]
    reused = ledger["reused"].values.astype(bool).tolist() if "reused" in ledger else [False] * n
    ends = ledger["end"].values.astype("datetime64[ns]").astype("int64") / 1e9 if "end" in ledger else [0.0] * n
    tasks: dict[str, _Task] = {}
    for key, stage, status, r, kwh, end in zip(ledger["task"].values.tolist(), ledger["stage"].values.tolist(),
                                               ledger["status"].values.tolist(), reused,
                                               ledger["energy_kwh"].values.tolist(), ends):
        state = "reused" if status == "ok" and r else _LEDGER_STATES.get(str(status), "pending")
        tasks[str(key)] = _Task(str(key), str(stage), state, _number(kwh), ended=_number(end) if end > 0 else 0.0)
    for group in tree.children:
        if group != "tasks":
            _stage_numbers(tree[group].to_dataset(), tasks)
    try:
        order = list(json.loads(str(tree.attrs.get("spec", "{}"))).get("stages", {}))
    except (ValueError, AttributeError):
        order = []
    stages: dict[str, list[str]] = {s: [] for s in order}
    for task in tasks.values():
        stages.setdefault(task.stage, []).append(task.key)
    return {"name": str(tree.attrs.get("name", "")), "pue": _number(ledger.attrs.get("pue", 1.0)),
            "intensity": _number(ledger.attrs.get("carbon_intensity_g_per_kwh")), "stages": stages, "tasks": tasks}


def _stage_numbers(ds: Any, tasks: dict[str, _Task]) -> None:
    """Accuracies and curves of a stage group's tasks (found by its ``task_key``) onto ``tasks``."""
    if "task_key" not in ds:
        return
    dims = ds["task_key"].dims
    keys = np.asarray(ds["task_key"].values, dtype=object)

    def per_point(name: str, extra: tuple[str, ...] = ()) -> np.ndarray | None:
        if name not in ds or set(ds[name].dims) != {*dims, *extra}:
            return None
        return np.asarray(ds[name].transpose(*dims, *extra).values, dtype=float)

    acc, val = per_point("accuracy"), per_point("val_accuracy")
    curve, kwh = per_point(_CURVES[0], ("epoch",)), per_point(_CURVES[1], ("epoch",))
    epochs = ds["epoch"].values if curve is not None and "epoch" in ds.coords else None
    for index in np.ndindex(keys.shape):
        task = tasks.get(keys[index]) if isinstance(keys[index], str) else None
        if task is None:
            continue
        if acc is not None:
            task.accuracy = float(acc[index])
        if val is not None:
            task.val_accuracy = float(val[index])
        if curve is not None:
            steps = epochs if epochs is not None else np.arange(1, curve.shape[-1] + 1)
            task.curve = _curve(steps, curve[index], kwh[index] if kwh is not None else curve[index] * np.nan)


def study_view(out: str | os.PathLike[str], study: str = "") -> StudyView:
    """The page's view of run directory ``out`` read once (:class:`RunDirBoard` keeps them
    fresh), named ``study`` (default: the folder's name).

    Raises
    ------
    InputError
        ``out`` is not a run directory (:func:`check_run_dir`), or its store cannot be read.
    """
    run = check_run_dir(out)
    return _Source(run, study or run.root.name).read()


class RunDirBoard(Board):
    """A :class:`~compressflow.dashboard._state.Board` of run directories, one study each (its
    id: the path as given, made URL-safe and unique), re-read at most every ``refresh_s``
    seconds when the page polls (:meth:`refresh`).

    Parameters
    ----------
    outs : sequence of path
        The run directories, checked at once (:func:`check_run_dir`).
    refresh_s : float
        The least time between two reads of a run directory.

    Raises
    ------
    InputError
        A path that is not a run directory, or whose store cannot be read.
    """

    def __init__(self, outs: list[str | os.PathLike[str]], refresh_s: float = 2.0) -> None:
        super().__init__(keep=max(len(outs), 1))
        self.refresh_s = refresh_s
        self.sources: list[_Source] = []
        ids: set[str] = set()
        seen: set[Path] = set()
        for out in outs:
            run = check_run_dir(out)
            where = run.root.resolve()
            if where in seen:  # the same folder twice: one study
                continue
            seen.add(where)
            study = base = re.sub(r"[^A-Za-z0-9._/-]", "_", os.fspath(out)).strip("/") or where.name
            n = 2
            while study in ids:
                study, n = f"{base}~{n}", n + 1
            ids.add(study)
            self.sources.append(_Source(run, study))
        self.read_at = -math.inf
        self.refresh(force=True)

    def refresh(self, force: bool = False) -> None:
        """Re-read every run directory (only what changed on disk) unless the last read was
        less than ``refresh_s`` ago. A run directory that cannot be read now (its store being
        replaced by hand, a record vanishing) keeps its last view, with a warning."""
        now = time.monotonic()
        if not force and now - self.read_at < self.refresh_s:
            return
        self.read_at = now
        for source in self.sources:
            try:
                view = source.read()
            except (InputError, OSError) as exc:
                if force:
                    raise
                log.warning("compressflow: %s: %s (showing the last read)", source.run.root, exc)
                continue
            self.studies[source.study] = view

    def snapshot(self, study: str | None = None) -> dict[str, Any]:
        """The page's data for ``study`` (default: the first run directory), re-read first
        where :meth:`refresh` allows."""
        self.refresh()
        return super().snapshot(study if study else next(iter(self.studies), None))
