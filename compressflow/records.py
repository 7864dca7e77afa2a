"""The small picklable things that travel through the task graph: artifacts (a file + its
hash), a stage's :class:`Record` and the ledger's :class:`TaskRecord`. Models and tensors
never travel; records persist as JSON so finished work survives the client."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

__all__ = ["Artifact", "Record", "TaskRecord", "Upstream"]


@dataclass(frozen=True)
class Artifact:
    """A file a stage produced, identified by its content hash.

    Parameters
    ----------
    kind : str
        ``"checkpoint"`` or ``"zarr"``.
    path : str
        Absolute path (on storage every worker can read).
    sha256 : str
        Hex digest of the file's bytes; loaders verify it.
    meta : dict
        Small JSON-able facts a consumer needs (model name and build kwargs, ...).
    """

    kind: str
    path: str
    sha256: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Record:
    """What a stage function returns: labelled metrics and an optional artifact.

    ``metrics`` is an :class:`xarray.Dataset` of scalars and named-dimension arrays (e.g.
    ``train_loss`` over ``epoch``) with units in ``attrs["units"]``; the runner stacks the
    records of a stage along its sweep axes.
    """

    metrics: xr.Dataset
    artifact: Artifact | None = None


@dataclass
class TaskRecord:
    """One entry of the ``/tasks`` ledger: what ran, where, for how long, at what energy."""

    key: str
    stage: str
    op: str
    point: dict[str, Any]
    status: str = "pending"  # ok | failed | upstream_failed
    error: str = ""
    worker: str = ""
    start: float = float("nan")  # POSIX seconds
    end: float = float("nan")
    energy: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0  # executions started, this one included (> 1: a worker died mid-task and Dask retried it)
    workers_tried: list[str] = field(default_factory=list)
    record: Record | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def duration_s(self) -> float:
        return self.end - self.start

    def to_json(self) -> str:
        data = {k: v for k, v in dataclasses.asdict(self).items() if k != "record"}
        if self.record is not None:
            data["record"] = {
                "metrics": self.record.metrics.to_dict(data="list"),
                "artifact": dataclasses.asdict(self.record.artifact) if self.record.artifact else None,
            }
        return json.dumps(data, default=_json_default)

    @classmethod
    def from_json(cls, text: str) -> TaskRecord:
        data = json.loads(text)
        rec = data.pop("record", None)
        task = cls(**data)
        if rec is not None:
            art = rec["artifact"]
            task.record = Record(xr.Dataset.from_dict(rec["metrics"]), Artifact(**art) if art else None)
        return task

    @classmethod
    def load(cls, path: Path) -> TaskRecord | None:
        try:
            return cls.from_json(path.read_text())
        except (OSError, ValueError, TypeError, KeyError):
            return None  # missing or torn: the task simply runs again


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


Upstream = list[TaskRecord]
"""Annotation of a *fan-in* stage input: it receives the ledger entries of every task of the
upstream stage (all sweep points, failed ones included, each with its ``point``, ``status``
and ``record``), e.g. to gather blockwise-distilled layers into one student."""
