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
    if done is not None and done.ok:  # finished in an earlier run: reuse, do not recompute
        # the same work may have been reached from another spec (another stage name, a seed
        # given as a parameter rather than a sweep axis): label it as this node
        done.stage, done.point = node.stage, dict(node.point)
        return done
    task = TaskRecord(node.key, node.stage, node.op, dict(node.point), worker=_worker_name())
    inputs, broken = _inputs(node, list(upstream))
    if broken:
        task.status = "upstream_failed"
        task.error = f"upstream stage {broken.stage!r} ({broken.key}) {broken.status}"
        return task
    ctx = StageContext(node.key, node.stage, data, Path(out))
    fn = STAGES.get(node.op)
    task.workers_tried = _log_attempt(out, node.key, task.worker)
    task.attempts = len(task.workers_tried)
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


def _log_attempt(out: str, key: str, worker: str) -> list[str]:
    """Append this execution to ``OUT/attempts/<key>.log`` (one line per start; an append of
    one short line is atomic) and return every worker that started the task so far: a worker
    killed mid-task leaves its line, so a retry shows up in the ledger."""
    path = Path(out) / "attempts" / f"{key}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(f"{worker} {time.time():.3f}\n")
    return [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _inputs(node: Node, upstream: list[TaskRecord]) -> tuple[dict[str, Any], TaskRecord | None]:
    """Stage inputs from the upstream records, in ``node.needs`` order: a single input gets
    its task's artifact (and a failed task stops this one); a fan-in input gets the list of
    every upstream task, failed ones included, for the stage to judge."""
    inputs: dict[str, Any] = {}
    for arg, keys in node.needs.items():
        if isinstance(keys, str):
            up = upstream.pop(0)
            if not up.ok:
                return inputs, up
            inputs[arg] = up.record.artifact
        else:
            inputs[arg], upstream = upstream[: len(keys)], upstream[len(keys):]
    return inputs, None


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"
