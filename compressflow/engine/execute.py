"""What runs inside every Dask task: run the stage function under the worker's energy meter,
catch its failure, and persist the record as soon as it exists. A training task keeps its
resumable states (``artifacts/<key>.resume<n>.pt``, :meth:`compressflow.ops.OpContext.fit`)
until it ends ``ok``: a failed, cancelled or killed attempt leaves them for the next one.

Records of earlier runs are not read here: the client's resume plan
(:func:`compressflow.engine.resume.plan_resume`) has already left reusable tasks out of the
graph and passes their records to the tasks downstream."""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from typing import Any

from distributed import Reschedule

from compressflow.engine.attempts import AttemptLog
from compressflow.energy import current_meter
from compressflow.engine.cancel import Cancelled, is_cancelled
from compressflow.engine.events import TASK, publish, task_summary
from compressflow.engine.graph import Node
from compressflow.engine.records import LedgerEntry, RecordError, read_record
from compressflow.engine.rundir import RunDir
from compressflow.registries import OPS
from compressflow.ops.context import OpContext
from compressflow.ops.signature import stage_signature

__all__ = ["execute_task", "with_lost_energy"]

log = logging.getLogger("compressflow.task")


def execute_task(node: Node, data: dict[str, Any], run: RunDir | str, *upstream: LedgerEntry,
                 study: str = "") -> LedgerEntry:
    """Run ``node`` and return its ledger entry.

    Never raises for a failing stage: the failure becomes ``status="failed"`` with the error
    message, and downstream tasks become ``upstream_failed``, so independent work goes on.
    ``upstream`` are the records of the tasks ``node.needs``, in order (computed in this run,
    or reused ones from the resume plan). ``study`` names the submission
    (:func:`compressflow.submit`): its cancelled stages (:mod:`compressflow.engine.cancel`)
    and its events (:mod:`compressflow.engine.events`).

    The one record read here is this task's own, and only when it exists: an earlier attempt
    of this very task finished but its worker died before Dask heard of it (a failed
    ``open`` otherwise, microseconds).
    """
    run = run if isinstance(run, RunDir) else RunDir(run)
    done = _finished_meanwhile(run, node.key)
    event = {"study": study, "key": node.key, "stage": node.stage, "op": node.op}
    if done is not None:
        done.stage, done.point = node.stage, dict(node.point)
        publish(TASK, {**event, "event": "end", **task_summary(done)})
        return done
    task = LedgerEntry(node.key, node.stage, node.op, dict(node.point), worker=_worker_name())
    inputs, broken = _inputs(node, list(upstream))
    if broken:
        task.status = "cancelled" if broken.status == "cancelled" else "upstream_failed"
        task.error = f"upstream stage {broken.stage!r} ({broken.key}) {broken.status}"
        publish(TASK, {**event, "event": "end", **task_summary(task)})
        return task
    if is_cancelled(study, node.stage):
        task.status, task.error = "cancelled", f"stage {node.stage!r} was cancelled before the task started"
        publish(TASK, {**event, "event": "end", **task_summary(task)})
        return task
    meter = current_meter()  # the worker's meter: the op reads it for its per-epoch energy curve
    ctx = OpContext(node.key, node.stage, data, run.root, meter=meter,
                    should_stop=(lambda: is_cancelled(study, node.stage)) if study else None,
                    checkpoint_every=node.checkpoint_every, budget=node.budget, state_key=node.state_key)
    publish(TASK, {**event, "event": "start", "worker": task.worker})
    fn = OPS.get(node.op)
    attempt = AttemptLog(run, node.key, task.worker)
    task.workers_tried = attempt.start()
    task.attempts = len(task.workers_tried)
    task.start = time.time()
    with meter.measure(node.key, on_sample=attempt.energy) as reading:
        try:
            task.record = stage_signature(node.op).call(fn, ctx, node.params, inputs)
            task.status = "ok"
        except Cancelled as exc:  # stopped at an epoch boundary: its energy (and checkpoint) stay
            task.status, task.error = "cancelled", str(exc)
        except Reschedule:  # its worker is retiring: handed back at an epoch boundary, state saved
            task.status = "rescheduled"
        except Exception as exc:  # a failing stage must not take down the rest of the study
            task.status = "failed"
            task.error = f"{type(exc).__name__}: {exc}".replace("\n", " ")
            log.error("task %s (%s) failed:\n%s", node.key, node.stage, traceback.format_exc())
    task.end = time.time()
    task.resumed_from_epoch = ctx.resumed_from_epoch
    attempt.end(task.status, reading.cpu_kwh, reading.gpu_kwh, reading.ram_kwh)
    task.energy = with_lost_energy(reading.as_dict(), attempt.lost())
    task.attempts_kwh = attempt.kwh()
    if task.status == "rescheduled":  # no result: the scheduler runs it again elsewhere, and that
        raise Reschedule()            # attempt counts this one's energy as lost (its log says so)
    if task.ok:
        run.write_record(node.key, task.to_json(root=run.root))
        if node.budget is None:  # a search's rung keeps its state: a promotion resumes it
            _drop_training_states(run, node.state_key or node.key)
    publish(TASK, {**event, "event": "end", **task_summary(task)})
    return task


def with_lost_energy(energy: dict[str, Any], lost: dict[str, float]) -> dict[str, Any]:
    """This attempt's reading plus the energy of the task's attempts that did not finish
    (``lost``, per component): what the task really cost. ``energy_lost_kwh`` keeps the lost
    part. CO₂ is left out: :func:`compressflow.results.build_results` computes it, once, from
    ``energy_kwh`` with the current spec's PUE and carbon intensity (so a reused record
    follows the spec too)."""
    total = dict(energy)
    total.pop("co2_g", None)
    for name, kwh in lost.items():
        total[name] = float(total.get(name, float("nan"))) + kwh
    total["energy_lost_kwh"] = sum(lost.values())
    total["energy_kwh"] = sum(float(total.get(name, float("nan"))) for name in lost)
    return total


def _drop_training_states(run: RunDir, key: str) -> None:
    """Delete the finished task's resumable states: its record and artifact now stand for it."""
    for path in run.artifact(key, "").parent.glob(f"{key}.resume*.pt"):
        try:
            path.unlink()
        except OSError as exc:  # a leftover state costs disk space only; the task did finish
            log.warning("could not delete the training state %s: %s", path, exc)


def _finished_meanwhile(run: RunDir, key: str) -> LedgerEntry | None:
    path = run.record(key)
    try:
        done = read_record(path, run.root, check_hash=False)
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
            assert up.record is not None  # an ok upstream task has its record
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
