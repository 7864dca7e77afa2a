"""What the dashboard page shows, kept from the study's events (no Dask, no Bokeh here):
one :class:`Board` per scheduler holding the latest studies, each task's state, energy and
accuracies, and the per-epoch curves of tasks that train."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from compressflow.energy.carbon import co2_grams
from compressflow.engine.events import PROGRESS, STUDY, TASK
from compressflow.engine.node import task_of

__all__ = ["STATES", "Board", "StudyView"]

#: Task states per stage, in the order the page stacks them. ``upstream_failed`` counts as
#: failed: the task did not produce a result because of a failure.
STATES = ("pending", "running", "ok", "failed", "cancelled", "reused")
_STATUS = {"ok": "ok", "failed": "failed", "upstream_failed": "failed", "cancelled": "cancelled"}


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


@dataclass
class _Task:
    key: str
    stage: str
    state: str = "pending"
    energy_kwh: float = math.nan  # at the end; while running, the last epoch's cumulative kWh
    accuracy: float = math.nan
    val_accuracy: float = math.nan
    worker: str = ""
    ended: float = 0.0
    curve: list[tuple[int, float, float]] = field(default_factory=list)  # (epoch, val_accuracy, kWh)


@dataclass
class StudyView:
    """One submission: its stages (stage → task keys), the tasks' states and numbers, and
    its carbon factors (gCO₂ = kWh × ``pue`` × ``intensity``)."""

    study: str
    name: str
    out: str
    stages: dict[str, list[str]]
    intensity: float
    pue: float
    tasks: dict[str, _Task]
    received: float = field(default_factory=time.time)

    @classmethod
    def from_event(cls, msg: dict[str, Any]) -> StudyView:
        stages = {str(s): [str(k) for k in keys] for s, keys in dict(msg.get("stages") or {}).items()}
        reused = dict(msg.get("reused") or {})
        tasks: dict[str, _Task] = {}
        for stage, keys in stages.items():
            for key in keys:
                if key in tasks:  # a task shared by two stages counts in its first stage
                    continue
                task = tasks[key] = _Task(key, stage)
                if key in reused:
                    done = dict(reused[key] or {})
                    task.state = "reused"
                    task.energy_kwh = _number(done.get("energy_kwh"))
                    task.accuracy, task.val_accuracy = _number(done.get("accuracy")), _number(done.get("val_accuracy"))
        return cls(str(msg.get("study", "")), str(msg.get("name", "")), str(msg.get("out", "")), stages,
                   _number(msg.get("intensity_g_per_kwh")), _number(msg.get("pue", 1.0)), tasks)

    def co2_g(self, kwh: float) -> float:
        return co2_grams(kwh, self.pue, self.intensity)

    def stage_table(self) -> list[dict[str, Any]]:
        """Per stage: tasks, the count in every state of :data:`STATES`, ``kwh`` (what ran in
        this submission, running tasks up to their last epoch), ``co2_g``, ``reused_kwh``."""
        rows = []
        for stage in self.stages:
            mine = [t for t in self.tasks.values() if t.stage == stage]
            row: dict[str, Any] = {"stage": stage, "tasks": len(mine), **{s: 0 for s in STATES}}
            for t in mine:
                row[t.state] += 1
            ran = [t.energy_kwh for t in mine if t.state != "reused" and math.isfinite(t.energy_kwh)]
            row["kwh"] = sum(ran, 0.0)
            row["co2_g"] = self.co2_g(row["kwh"])
            earlier = [t.energy_kwh for t in mine if t.state == "reused" and math.isfinite(t.energy_kwh)]
            row["reused_kwh"] = sum(earlier, 0.0)
            rows.append(row)
        return rows

    def scatter(self) -> list[dict[str, Any]]:
        """Finished tasks (ran or reused) with an accuracy: test accuracy where the op
        records one, else validation accuracy, against the task's gCO₂."""
        points = []
        for t in self.tasks.values():
            if t.state not in ("ok", "reused") or not math.isfinite(t.energy_kwh):
                continue
            acc = t.accuracy if math.isfinite(t.accuracy) else t.val_accuracy
            if math.isfinite(acc):
                points.append({"key": t.key, "stage": t.stage, "accuracy": acc, "co2_g": self.co2_g(t.energy_kwh),
                               "kwh": t.energy_kwh, "reused": t.state == "reused"})
        return points

    def curves(self, finished: int = 8) -> list[dict[str, Any]]:
        """Per-epoch curves of running tasks, then of the ``finished`` tasks that ended last
        (drawn faint): epochs, validation accuracy and cumulative kWh."""
        running = [t for t in self.tasks.values() if t.state == "running" and t.curve]
        done = sorted((t for t in self.tasks.values() if t.state != "running" and t.curve and t.ended),
                      key=lambda t: -t.ended)[:finished]
        return [{"key": t.key, "stage": t.stage, "running": t.state == "running",
                 "epoch": [c[0] for c in t.curve], "val_accuracy": [c[1] for c in t.curve],
                 "kwh": [c[2] for c in t.curve]} for t in running + done]


class Board:
    """The latest ``keep`` studies seen by one scheduler, updated from its events.

    Task and progress events update the task they name (``key``) in the study they name
    (``study``) only: two studies of the same work (the same task keys) each run their own
    tasks. Dask's transitions name a task by its Dask key, which names its study too
    (:func:`~compressflow.engine.node.dask_key`)."""

    def __init__(self, keep: int = 20) -> None:
        self.keep = keep
        self.studies: OrderedDict[str, StudyView] = OrderedDict()

    def log_event(self, topic: str, msg: Any) -> None:
        if not isinstance(msg, dict):
            return
        if topic == STUDY:
            view = StudyView.from_event(msg)
            self.studies.pop(view.study, None)
            self.studies[view.study] = view
            while len(self.studies) > self.keep:
                self.studies.popitem(last=False)
        elif topic == TASK:
            for task in self._tasks(msg):
                self._task_event(task, msg)
        elif topic == PROGRESS:
            for task in self._tasks(msg):
                if task.state == "pending":
                    task.state = "running"
                epoch = _number(msg.get("epoch"))
                epoch = int(epoch) if math.isfinite(epoch) else len(task.curve) + 1
                kwh = _number(msg.get("energy_kwh"))
                task.curve = [c for c in task.curve if c[0] < epoch]  # a resumed task repeats epochs
                task.curve.append((epoch, _number(msg.get("val_accuracy")), kwh))
                if task.state == "running" and math.isfinite(kwh):
                    task.energy_kwh = kwh

    def open(self, key: str) -> bool:
        """Whether Dask key ``key`` is a task of a study here that has not ended yet."""
        return any(task.state in ("pending", "running") for _, task in self._of_dask_key(key))

    def settled(self, key: str, erred: bool, upstream: list[str]) -> None:
        """Dask finished Dask key ``key`` (``erred``: Dask gave up on it; ``upstream``: the
        Dask keys it depends on) with no end event: a task Dask itself failed, or one that
        returned at once (an upstream task failed or was cancelled: it takes that state; else
        it was done already)."""
        for view, task in self._of_dask_key(key):
            if task.state not in ("pending", "running"):
                continue
            ups = {view.tasks[k].state for k in (task_of(u, view.study) for u in upstream) if k in view.tasks}
            task.state = ("failed" if erred or "failed" in ups else "cancelled" if "cancelled" in ups else "ok")
            task.ended = time.time()

    def _tasks(self, msg: dict[str, Any]) -> list[_Task]:
        """The task an event names (its study's, by task key), if this board has it."""
        view = self.studies.get(str(msg.get("study", "")))
        task = view.tasks.get(str(msg.get("key", ""))) if view is not None else None
        return [task] if task is not None else []

    def _of_dask_key(self, key: str) -> list[tuple[StudyView, _Task]]:
        found = ((view, view.tasks.get(task_of(key, view.study) or "")) for view in self.studies.values())
        return [(view, task) for view, task in found if task is not None]

    @staticmethod
    def _task_event(task: _Task, msg: dict[str, Any]) -> None:
        task.worker = str(msg.get("worker", task.worker))
        if msg.get("event") == "start":
            task.state, task.curve = "running", []
            return
        task.state = _STATUS.get(str(msg.get("status")), "failed")
        task.energy_kwh = _number(msg.get("energy_kwh"))
        task.accuracy, task.val_accuracy = _number(msg.get("accuracy")), _number(msg.get("val_accuracy"))
        task.ended = time.time()

    def latest(self) -> StudyView | None:
        return next(reversed(self.studies.values()), None)

    def snapshot(self, study: str | None = None) -> dict[str, Any]:
        """The page's data for ``study`` (default: the latest), JSON-ready (NaN → None)."""
        view = self.studies.get(study) if study else self.latest()
        listing = [{"study": v.study, "name": v.name, "received": v.received} for v in self.studies.values()]
        if view is None:
            return {"study": None, "studies": listing, "stages": [], "table": [], "scatter": [], "curves": []}
        return _jsonable({"study": view.study, "name": view.name, "out": view.out, "studies": listing,
                          "intensity_g_per_kwh": view.intensity, "pue": view.pue, "stages": list(view.stages),
                          "table": view.stage_table(), "scatter": view.scatter(), "curves": view.curves()})


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
