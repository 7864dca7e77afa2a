"""What runs inside every Dask task: reuse a finished record, or run the stage function under
the worker's energy meter, catch its failure, and persist the record as soon as it exists."""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any

from compressflow.energy import current_meter
from compressflow.graph import Node
from compressflow.records import TaskRecord
from compressflow.registries import STAGES
from compressflow.stages._context import StageContext
from compressflow.stages._signature import stage_signature
from compressflow.store import atomic_write_text

__all__ = ["execute_task", "record_path"]

log = logging.getLogger("compressflow.task")


def record_path(out: Path | str, key: str) -> Path:
    return Path(out) / "records" / f"{key}.json"


def execute_task(node: Node, data: dict[str, Any], out: str, *upstream: TaskRecord) -> TaskRecord:
    """Run ``node`` (or return its persisted record) and return its ledger entry.

    Never raises for a failing stage: the failure becomes ``status="failed"`` with the error
    message, and downstream tasks become ``upstream_failed``, so independent work goes on.
    """
    path = record_path(out, node.key)
    done = TaskRecord.load(path)
    if done is not None and done.ok:
        return done  # finished in an earlier run: reuse, do not recompute
    task = TaskRecord(node.key, node.stage, node.op, dict(node.point), worker=_worker_name())
    broken = [u for u in upstream if not u.ok]
    if broken:
        task.status = "upstream_failed"
        task.error = f"upstream stage {broken[0].stage!r} ({broken[0].key}) {broken[0].status}"
        return task
    inputs = {arg: up.record.artifact for arg, up in zip(node.needs, upstream)}
    ctx = StageContext(node.key, node.stage, data, Path(out))
    fn = STAGES.get(node.op)
    task.start = time.time()
    with current_meter().measure(node.key) as reading:
        try:
            task.record = stage_signature(node.op).call(fn, ctx, node.params, inputs)
            task.status = "ok"
        except Exception as exc:  # a failing stage must not take down the rest of the study
            task.status = "failed"
            task.error = f"{type(exc).__name__}: {exc}".replace("\n", " ")
            log.error("task %s (%s) failed:\n%s", node.key, node.stage, traceback.format_exc())
    task.end = time.time()
    task.energy = reading.as_dict()
    if task.ok:
        atomic_write_text(path, task.to_json())
    return task


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"
