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

from compressflow.engine.attempts import AttemptLog
from compressflow.energy import co2_grams, current_meter
from compressflow.engine.graph import Node
from compressflow.engine.records import LedgerEntry, RecordError, read_record
from compressflow.registries import OPS
from compressflow.ops.context import OpContext
from compressflow.ops.signature import stage_signature
from compressflow.ops.artifacts import atomic_write_text

__all__ = ["execute_task", "record_path"]

log = logging.getLogger("compressflow.task")


def record_path(out: Path | str, key: str) -> Path:
    return Path(out) / "records" / f"{key}.json"


def execute_task(node: Node, data: dict[str, Any], out: str, *upstream: LedgerEntry) -> LedgerEntry:
    """Run ``node`` (or return its persisted record) and return its ledger entry.

    Never raises for a failing stage: the failure becomes ``status="failed"`` with the error
    message, and downstream tasks become ``upstream_failed``, so independent work goes on.
    A persisted record is reused only when it passes :func:`~compressflow.engine.records.read_record`
    (the runner has hashed its artifact before submitting); a bad one is logged and the task
    runs again.
    """
    path = record_path(out, node.key)
    done = _reusable(path, out)
    if done is not None:  # finished in an earlier run: reuse, do not recompute
        # the same work may have been reached from another spec (another stage name, a seed
        # given as a parameter rather than a sweep axis): label it as this node
        done.stage, done.point = node.stage, dict(node.point)
        return done
    task = LedgerEntry(node.key, node.stage, node.op, dict(node.point), worker=_worker_name())
    inputs, broken = _inputs(node, list(upstream))
    if broken:
        task.status = "upstream_failed"
        task.error = f"upstream stage {broken.stage!r} ({broken.key}) {broken.status}"
        return task
    meter = current_meter()  # the worker's meter: the op reads it for its per-epoch energy curve
    ctx = OpContext(node.key, node.stage, data, Path(out), meter=meter)
    fn = OPS.get(node.op)
    attempt = AttemptLog(out, node.key, task.worker)
    task.workers_tried = attempt.start()
    task.attempts = len(task.workers_tried)
    task.start = time.time()
    with meter.measure(node.key, on_sample=attempt.energy) as reading:
        try:
            task.record = stage_signature(node.op).call(fn, ctx, node.params, inputs)
            task.status = "ok"
        except Exception as exc:  # a failing stage must not take down the rest of the study
            task.status = "failed"
            task.error = f"{type(exc).__name__}: {exc}".replace("\n", " ")
            log.error("task %s (%s) failed:\n%s", node.key, node.stage, traceback.format_exc())
    task.end = time.time()
    attempt.end(task.status, reading.cpu_kwh, reading.gpu_kwh, reading.ram_kwh)
    task.energy = with_lost_energy(reading.as_dict(), attempt.lost())
    if task.ok:
        atomic_write_text(path, task.to_json(root=out))
    return task


def with_lost_energy(energy: dict[str, Any], lost: dict[str, float]) -> dict[str, Any]:
    """This attempt's reading plus the energy of the task's attempts that did not finish
    (``lost``, per component): what the task really cost. ``energy_lost_kwh`` keeps the lost
    part; ``co2_g`` follows the new total."""
    total = dict(energy)
    for name, kwh in lost.items():
        total[name] = float(total.get(name, float("nan"))) + kwh
    total["energy_lost_kwh"] = sum(lost.values())
    total["energy_kwh"] = sum(float(total.get(name, float("nan"))) for name in lost)
    if "pue" in total and "intensity_g_per_kwh" in total:
        total["co2_g"] = co2_grams(total["energy_kwh"], total["pue"], total["intensity_g_per_kwh"])
    return total


def _reusable(path: Path, out: str) -> LedgerEntry | None:
    try:
        done = read_record(path, out, check_hash=False)
    except FileNotFoundError:
        return None
    except RecordError as exc:
        log.warning("record %s is not reused and its task runs again: %s", path, exc)
        return None
    return done if done.ok else None


def _inputs(node: Node, upstream: list[LedgerEntry]) -> tuple[dict[str, Any], LedgerEntry | None]:
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
