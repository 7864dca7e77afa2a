"""What runs inside every Dask task: run the stage function under the worker's energy meter,
catch its failure, and persist the record as soon as it exists. A training task keeps its
resumable states (:meth:`compressflow.rundir.RunDir.training_state`,
:meth:`compressflow.ops.OpContext.fit`) until it ends ``ok``: a failed, cancelled or killed
attempt leaves them for the next one.

The ops import torch when they first run; a worker imports it once, before its first task's
clock and meter start (:func:`prepare`), so that import (seconds) is no task's time or energy.

Records of earlier runs are not read here: the client's resume plan
(:func:`compressflow.engine.resume.plan_resume`) has already left reusable tasks out of the
graph and passes their records to the tasks downstream."""

from __future__ import annotations

import functools
import importlib
import logging
import os
import socket
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from distributed import Reschedule
from distributed.diagnostics.plugin import WorkerPlugin

from compressflow.energy.plugin import current_meter
from compressflow.engine.cancel import Cancelled, is_cancelled, stop_check
from compressflow.engine.events import PROGRESS, TASK, publish, task_summary
from compressflow.engine.node import Node
from compressflow.errors import disk_full
from compressflow.ops import OpContext
from compressflow.ops.signature import stage_signature
from compressflow.registries import OPS
from compressflow.rundir import RunDir
from compressflow.rundir.records import LedgerEntry, RecordError

__all__ = ["PRELOAD", "PreloadPlugin", "execute_task", "load_data", "prepare", "with_lost_energy"]

#: what every op's first run would import (the tensor library, the model architectures, the
#: training loop, the FLOP counter, the metrics and the record type: the built-in ops import them
#: when they run, not when they register); a worker imports them once, outside any task's clock
#: and meter (a first ``train`` task took 2.4 s instead of 0.8 s when they were left to it)
PRELOAD = ("torch", "torchvision", "xarray", "dask.array", "torch.utils.flop_counter", "compressflow.nn.training",
           "compressflow.nn.architectures", "compressflow.metrics.flops", "compressflow.metrics.classification")

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
    task.code = OPS.code(node.op) or ""  # the source this worker runs, kept in the record
    if node.code and task.code != node.code:  # results of other code must not be kept under this key
        task.status, task.error = "failed", _stale_source(node, task)
        log.error("task %s (%s) failed: %s", node.key, node.stage, task.error)
        publish(TASK, {**event, "event": "end", **task_summary(task)})
        return task
    prepare()
    meter = current_meter()  # the worker's meter: the op reads it for its per-epoch energy curve
    ctx = OpContext(node.key, node.stage, data, run.root, meter=meter, stop_check=stop_check(study, node.stage),
                    publish=functools.partial(_progress, study), checkpoint_every=node.checkpoint_every,
                    budget=node.budget, state_key=node.state_key)
    publish(TASK, {**event, "event": "start", "worker": task.worker})
    fn = OPS.get(node.op)
    attempt = run.attempt_log(node.key, task.worker)
    try:
        attempt.start()
    except OSError as exc:  # a full disk: the task could not even log its start
        _fail_for_full_disk(task, exc, attempt.path)
        publish(TASK, {**event, "event": "end", **task_summary(task)})
        return task
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
            full = disk_full(exc, run.root)  # a full disk is one line, not a traceback
            task.error = str(full) if full else f"{type(exc).__name__}: {exc}".replace("\n", " ")
            log.error("task %s (%s) failed:%s", node.key, node.stage,
                      f" {full}" if full else f"\n{traceback.format_exc()}")
    task.end = time.time()
    task.resumed_from_epoch = ctx.resumed_from_epoch
    try:
        attempts = attempt.end(task.status, reading.cpu_kwh, reading.gpu_kwh, reading.ram_kwh)
    except OSError as exc:  # a full disk: no end line, so the next attempt counts this one's energy as lost
        _fail_for_full_disk(task, exc, attempt.path)
        task.energy = reading.as_dict()
        publish(TASK, {**event, "event": "end", **task_summary(task)})
        return task
    task.workers_tried, task.attempts = attempts.workers, len(attempts.workers)
    task.energy = with_lost_energy(reading.as_dict(), attempts.lost)
    task.attempts_kwh = attempts.kwh
    if task.status == "rescheduled":  # no result: the scheduler runs it again elsewhere, and that
        raise Reschedule()            # attempt counts this one's energy as lost (its log says so)
    if task.ok:
        try:
            run.write_record(task)
        except OSError as exc:  # a full disk: no record, so the task runs again next time
            _fail_for_full_disk(task, exc, run.record(node.key))
    if task.ok and node.budget is None:  # a search's rung keeps its state: a promotion resumes it
        for path, problem in run.drop_training_states(node.state_key or node.key):
            # a leftover state costs disk space only; the task did finish
            log.warning("could not delete the training state %s: %s", path, problem)
    publish(TASK, {**event, "event": "end", **task_summary(task)})
    return task


@functools.cache
def prepare() -> None:
    """Import :data:`PRELOAD` in this worker process, once (a worker plugin may already be
    doing so in the background since the worker started: this then waits for it)."""
    for name in PRELOAD:
        importlib.import_module(name)


def load_data(options: dict[str, Any]) -> None:
    """Load the study's dataset in this worker process (cached there for its tasks): what the
    client has a worker do before any task runs, so a damaged file is one ``DataError``."""
    from compressflow.data import load_detection_splits, load_splits
    from compressflow.registries import DATASETS

    prepare()
    detection = DATASETS.info(options["dataset"])["task"] == "detection"
    (load_detection_splits if detection else load_splits)(**options)


class PreloadPlugin(WorkerPlugin):
    """Starts importing :data:`PRELOAD` on every worker (present and future) in a background
    thread as soon as it joins, so the seconds of importing torch overlap the cluster's start
    and the client's submission instead of delaying the first task."""

    name = "compressflow-preload"

    def setup(self, worker: Any) -> None:
        threading.Thread(target=prepare, name="compressflow-preload", daemon=True).start()


def with_lost_energy(energy: dict[str, Any], lost: dict[str, float]) -> dict[str, Any]:
    """This attempt's reading plus the energy of the task's attempts that did not finish
    (``lost``, per component): what the task really cost. ``energy_lost_kwh`` keeps the lost
    part. CO₂ is not kept in a record: the results compute it, once, from ``energy_kwh`` with
    the current spec's PUE and carbon intensity (:func:`compressflow.energy.co2_grams`), so a
    reused record follows the spec too."""
    total = dict(energy)
    for name, kwh in lost.items():
        total[name] = float(total.get(name, float("nan"))) + kwh
    total["energy_lost_kwh"] = sum(lost.values())
    total["energy_kwh"] = sum(float(total.get(name, float("nan"))) for name in lost)
    return total


def _fail_for_full_disk(task: LedgerEntry, exc: OSError, path: Path) -> None:
    """Fail ``task`` with the one line of a full disk (:func:`compressflow.errors.disk_full`)
    instead of a traceback; re-raise ``exc`` when it is another error."""
    full = disk_full(exc, path)
    if full is None:
        raise exc
    task.status, task.error, task.record = "failed", str(full), None
    log.error("task %s (%s) failed: %s", task.key, task.stage, full)


def _finished_meanwhile(run: RunDir, key: str) -> LedgerEntry | None:
    try:
        done = run.read_record(key, check_hash=False)
    except FileNotFoundError:
        return None
    except RecordError as exc:
        log.warning("record %s is not reused and its task runs again: %s", run.record(key), exc)
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


def _progress(study: str, values: dict[str, Any]) -> None:
    publish(PROGRESS, {"study": study, **values})


def _stale_source(node: Node, task: LedgerEntry) -> str:
    """Why ``node`` is not run here: this process imported another source of its op than the one
    its key was computed from (the op's file was edited after a long-lived worker imported it)."""
    here = task.code[:12] or "unreadable"
    return (f"op {node.op!r} on worker {task.worker} runs the source it imported earlier (sha256 {here}...), "
            f"not the one this task is keyed with (sha256 {node.code[:12]}...): its file changed since; "
            f"restart the workers (Client.restart(), or a new Python session for an in-process cluster) "
            f"to run the edited op")


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"
