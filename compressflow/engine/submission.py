"""Putting a task graph on a Dask cluster: the energy meter on every worker, the resource check,
submission stage by stage under each stage's placement policy, and the workers' machines for the
results' provenance. Used by :mod:`compressflow.api.study`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from distributed import Client, span
from distributed.comm.addressing import get_address_host
from distributed.comm.core import CommClosedError
from distributed.diagnostics.plugin import WorkerPlugin

from compressflow.engine.execute import execute_task, load_data
from compressflow.engine.graph import TaskGraph, upstream_keys
from compressflow.engine.node import Node, dask_key
from compressflow.engine.scheduling import assign, durations_of
from compressflow.errors import InputError
from compressflow.registries import OPS
from compressflow.rundir import RunDir
from compressflow.rundir.records import LedgerEntry
from compressflow.engine.provenance import machine

__all__ = ["check_resources", "install_worker_plugin", "known_durations", "load_data_first", "lost_entry", "machines", "progress_line", "submit_graph", "submit_node",
           "workers_per_host"]

log = logging.getLogger("compressflow.engine.submission")


def machines(client: Client) -> dict[str, Any]:
    """Host, CPU and GPU models of every worker still connected (for the results' provenance);
    an empty mapping if the cluster cannot answer (the results are written all the same)."""
    try:
        return client.run(machine)
    except Exception as exc:  # a worker lost at the very end must not cost the run its results
        log.warning("compressflow: could not ask the workers what machines they run on: %s", exc)
        return {}


def submit_graph(client: Client, graph: TaskGraph, workers: list[str]) -> dict[str, Any]:
    """Compute stage by stage (upstream first) so each stage's ``resources`` and placement
    apply to its own tasks only; tasks shared with an earlier stage keep their first
    submission. Under ``round_robin``/``bin_packing`` each task is pinned to its worker;
    under ``work_stealing`` with known durations (``durations_from``) the longest tasks get
    the highest priority (longest first, so no long task starts last and the stage ends
    evenly), and Dask balances the rest. Returns task key -> future."""
    futures: dict[str, Any] = {}
    for stage, nodes in graph.stages.items():
        keys = [n.key for n in nodes if n.key not in futures and n.key in graph.delayed]
        if not keys:
            continue
        resources = nodes[0].resources or None
        sched = graph.spec.stages[stage].scheduling
        durations = known_durations(graph, stage, keys)
        with span(stage):
            if sched.policy == "work_stealing" and durations is None:
                submitted = client.compute([graph.delayed[k] for k in keys], resources=resources, optimize_graph=False)
            elif sched.policy == "work_stealing" and durations is not None:  # longest first, in submission order and priority
                known = durations
                keys = sorted(keys, key=lambda k: -known[k])
                submitted = [client.compute(graph.delayed[k], resources=resources, optimize_graph=False,
                                            priority=len(keys) - i) for i, k in enumerate(keys)]
            else:
                placement = assign(sched.policy, durations or dict.fromkeys(keys, 1.0), workers)
                assert placement is not None  # only work stealing leaves placement to Dask
                submitted = [client.compute(graph.delayed[k], resources=resources, optimize_graph=False,
                                            workers=[placement[k]], allow_other_workers=False) for k in keys]
        futures.update(zip(keys, submitted))
    return futures


def load_data_first(client: Client, graph: TaskGraph, study: str) -> None:
    """Have one worker load the study's dataset before any task is submitted (when a task to
    run reads data): a damaged file, whose location the client checked, raises its one-line
    ``DataError`` here with no task started, and that worker keeps the data for its tasks."""
    if not graph.delayed and not graph.searches:
        return  # every task is reused
    if all(OPS.info(st.op)["data"] is None for st in graph.spec.stages.values()):
        return
    client.submit(load_data, graph.spec.data.options(), pure=False, key=f"compressflow-data-{study}").result()


def submit_node(client: Client, graph: TaskGraph, node: Node, futures: Mapping[str, Any], run: RunDir,
                study: str) -> Any:
    """Submit one task on its own (a search's trial at a rung), under its Dask key in submission
    ``study``: its upstream tasks are reused records or ``futures`` (task key -> future) already
    submitted."""
    upstream = [graph.reused[k] if k in graph.reused else futures[k] for k in upstream_keys(node.needs.values())]
    return client.submit(execute_task, node, graph.spec.data.options(), run, *upstream, study=study,
                         key=dask_key(node.key, study), resources=node.resources or None, pure=False)


def lost_entry(node: Node, future: Any) -> LedgerEntry:
    """The ledger entry of a task Dask itself gave up on (e.g. its workers kept dying): failed,
    with why, so the collection of the others goes on."""
    try:
        exc = future.exception()
        why = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    except Exception as err:  # cancelled futures have no exception to give
        why = f"{type(err).__name__}: {err}"
    return LedgerEntry(node.key, node.stage, node.op, dict(node.point), status="failed", error=why)


def known_durations(graph: TaskGraph, stage: str, keys: list[str]) -> dict[str, float] | None:
    """Task key -> duration from the finished records of the run directory
    ``scheduling.durations_from`` (tasks matched by the ``key_by`` sweep axis; unmatched ones
    get the mean), or None without one."""
    sched = graph.spec.stages[stage].scheduling
    key_by = sched.key_by or next(iter(graph.spec.stages[stage].axes()), None)
    if sched.durations_from is None or key_by is None:
        return None
    earlier = RunDir(sched.durations_from)
    finished = [e for e in (earlier.finished(k, metrics=False) for k in earlier.record_keys()) if e is not None]
    if not finished:
        raise InputError(f"stages.{stage}.scheduling.durations_from: no finished task records in "
                         f"{str(earlier.root)!r}; give the run directory of an earlier run of this study")
    known = durations_of(finished, stage, key_by)
    default = sum(known.values()) / len(known) if known else 1.0
    return {k: known.get(str(graph.nodes[k].point.get(key_by)), default) for k in keys}


def install_worker_plugin(client: Client, plugin: WorkerPlugin) -> None:
    """Register a worker plugin (the energy meter, the preload) on every worker, present and
    future, under its ``name``. The scheduler keeps the plugin before it tells the workers, so
    a worker that dies meanwhile (its broadcast fails) does not stop the run: its replacement
    gets the plugin when it joins."""
    name = getattr(plugin, "name", type(plugin).__name__)
    try:
        client.register_plugin(plugin, name=name)
    except CommClosedError as exc:
        log.warning("a worker left while %s was being installed (%s); continuing", name, exc)


def workers_per_host(workers: dict[str, Any]) -> dict[str, int]:
    """Host → number of workers on it (host-wide energy shares are split over them)."""
    counts: dict[str, int] = {}
    for address in workers:
        host = get_address_host(address)
        counts[host] = counts.get(host, 0) + 1
    return counts


def check_resources(workers: dict[str, Any], graph: TaskGraph) -> None:
    offered: dict[str, float] = {}
    for w in workers.values():
        for name, amount in (w.get("resources") or {}).items():
            offered[name] = max(offered.get(name, 0), amount)
    for stage, nodes in graph.stages.items():
        requested = nodes[0].resources if nodes else graph.spec.stages[stage].resources  # a search: no task yet
        for name, amount in requested.items():
            if not offered.get(name, 0) >= amount:  # also refuses a NaN request, which no worker can meet
                raise InputError(
                    f"stages.{stage}.resources.{name}: needs {amount:g} but no worker offers that much "
                    f"(workers offer {offered or 'no resources'}); use a GPU cluster spec or drop the request"
                )


def progress_line(event: tuple[float, dict]) -> str:
    _, msg = event
    stage = msg.get("stage", "?")
    rest = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in msg.items() if k not in ("stage", "key"))
    return f"  [{stage}] {rest}"
