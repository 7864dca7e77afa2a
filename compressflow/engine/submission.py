"""Putting a task graph on a Dask cluster: the energy meter on every worker, the resource check,
submission stage by stage under each stage's placement policy, and the workers' machines for the
results' provenance. Used by :mod:`compressflow.engine.study`."""

from __future__ import annotations

import logging
from typing import Any

from distributed import Client, span
from distributed.comm.addressing import get_address_host
from distributed.comm.core import CommClosedError

from compressflow.energy import EnergyMeterPlugin
from compressflow.engine.graph import TaskGraph
from compressflow.engine.scheduling import assign, durations_from_ledger
from compressflow.errors import InputError
from compressflow.results import open_results
from compressflow.results.provenance import machine

__all__ = ["check_resources", "install_meter", "known_durations", "machines", "progress_line", "submit_graph",
           "workers_per_host"]

log = logging.getLogger("compressflow.engine.runner")


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
    evenly), and Dask balances the rest."""
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


def known_durations(graph: TaskGraph, stage: str, keys: list[str]) -> dict[str, float] | None:
    """Task key -> duration from the ledger of ``scheduling.durations_from`` (tasks matched by
    the ``key_by`` sweep axis; unmatched ones get the mean), or None without one."""
    sched = graph.spec.stages[stage].scheduling
    key_by = sched.key_by or next(iter(graph.spec.stages[stage].axes()), None)
    if sched.durations_from is None or key_by is None:
        return None
    try:
        ledger = open_results(sched.durations_from)["tasks"].to_dataset()
    except FileNotFoundError as exc:
        raise InputError(f"stages.{stage}.scheduling.durations_from: {exc}") from None
    known = durations_from_ledger(ledger, stage, key_by)
    default = sum(known.values()) / len(known) if known else 1.0
    return {k: known.get(str(graph.nodes[k].point.get(key_by)), default) for k in keys}


def install_meter(client: Client, plugin: EnergyMeterPlugin) -> None:
    """Register the energy meter on every worker, present and future. The scheduler keeps the
    plugin before it tells the workers, so a worker that dies meanwhile (its broadcast fails)
    does not stop the run: its replacement gets the plugin when it joins."""
    try:
        client.register_plugin(plugin, name="compressflow-energy")
    except CommClosedError as exc:
        log.warning("a worker left while the energy meter was being installed (%s); continuing", exc)


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
