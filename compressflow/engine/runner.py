"""``run``: validate a spec, build its graph, run it on a Dask cluster, write the results."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import xarray as xr
from distributed import Client, as_completed, progress, span
from distributed.comm.addressing import get_address_host
from distributed.comm.core import CommClosedError

from compressflow._console import console
from compressflow.engine.cluster import connect
from compressflow.data import load_splits
from compressflow.energy import EnergyMeterPlugin
from compressflow.errors import InputError
from compressflow.engine.graph import TaskGraph, build_graph, expand
from compressflow.engine.records import LedgerEntry
from compressflow.engine.resume import plan_resume
from compressflow.engine.rundir import RunDir
from compressflow.results import build_results, open_results, check_results_store, save_results
from compressflow.results.provenance import machine, provenance
from compressflow.engine.scheduling import assign, durations_from_ledger
from compressflow.engine.spec import PipelineSpec, load_spec
from compressflow.plugins import Plugin, dedupe, import_plugins
from compressflow.plugins import install as install_plugins

__all__ = ["run"]

log = logging.getLogger("compressflow.engine.runner")


def run(
    spec: str | os.PathLike | dict | PipelineSpec,
    cluster: Any = None,
    out: str | os.PathLike | None = None,
    *,
    plugins: Sequence[str | os.PathLike | Plugin] = (),
    show_progress: bool = True,
) -> xr.DataTree:
    """Run a compression study and return its results.

    Parameters
    ----------
    spec : path, mapping or PipelineSpec
        The pipeline (see :func:`compressflow.load_spec`).
    cluster : None, str, path, dict or distributed.Client
        Where to run: ``None`` starts the embedded ``LocalCluster``; also a cluster spec
        YAML, a ``tcp://`` scheduler address or an existing client
        (see :func:`compressflow.engine.cluster.connect`).
    out : path, optional
        Run directory (default ``runs/<spec name>``): ``results.zarr``, ``records/`` (one
        JSON per finished task; a re-run reuses them) and ``artifacts/`` (checkpoints).
    plugins : sequence of str
        Your own ops, models, datasets, ...: ``.py`` files, package folders (relative to the
        working directory) or module names, imported here before the spec is validated and
        on every worker, present and future, before it runs a task (with the spec's own
        ``plugins``; see :mod:`compressflow.plugins`).
    show_progress : bool
        Show the dashboard link, a progress bar and per-epoch progress lines. They are logged
        (logger ``compressflow.engine.runner``, level INFO; warnings at WARNING): unless you
        attach a handler to the ``compressflow`` logger, they are shown on stderr for the
        run (:func:`compressflow._console.console`).

    Returns
    -------
    xarray.DataTree
        ``/tasks`` (the ledger) and one group per stage; also written to
        ``out/results.zarr``.

    Raises
    ------
    InputError
        Bad spec, plugin, data location, cluster or output directory — before any task runs.

    Examples
    --------
    >>> tree = compressflow.run("tasks/quickstart.yaml")            # doctest: +SKIP
    >>> float(tree["teacher"]["accuracy"])                          # doctest: +SKIP
    0.96
    """
    extra = import_plugins([os.fspath(p) if isinstance(p, os.PathLike) else p for p in plugins])
    spec = load_spec(spec)
    shipped = dedupe([*import_plugins(spec.plugins), *extra])  # the spec's are absolute by now
    run_dir = RunDir(Path(out) if out is not None else Path("runs") / spec.name)
    run_dir.check_writable()
    with run_dir.lock(), console(logging.INFO if show_progress else logging.WARNING):
        return _run_locked(spec, cluster, run_dir, show_progress, shipped)


def _run_locked(spec: PipelineSpec, cluster: Any, run_dir: RunDir, show_progress: bool,
                plugins: list[Plugin]) -> xr.DataTree:
    out = run_dir.root
    check_results_store(out)
    load_splits(**spec.data.options())  # a missing dataset directory fails here, not on a worker
    stages = expand(spec)
    resolved = RunDir(out.resolve())
    reused = plan_resume((n for nodes in stages.values() for n in nodes), resolved)  # the one read of the records
    graph = build_graph(spec, resolved.root, reused, stages=stages)
    with connect(cluster) as client:
        install_plugins(client, plugins)  # before any task: workers look the ops up by name
        say = _printer(show_progress)
        say(f"compressflow: {len(graph.nodes)} tasks in {len(graph.stages)} stages ({len(graph.reused)} reused from "
            f"earlier runs); dashboard {client.dashboard_link}")
        workers = client.scheduler_info(n_workers=-1)["workers"]  # address -> info, read once
        _install_meter(client, EnergyMeterPlugin(country=spec.energy.country, region=spec.energy.region,
                                                 pue=spec.energy.pue, n_workers_on_host=_workers_per_host(workers)))
        _check_resources(workers, graph)
        if show_progress:
            client.subscribe_topic("compressflow-progress", lambda event: say(_progress_line(event)))
        futures = _submit(client, graph, sorted(workers))
        if show_progress:
            _show_progress(graph, futures, say)
        results = _gather(client, graph, futures)
        machines = _machines(client)
        if show_progress:
            client.unsubscribe_topic("compressflow-progress")
    tree = build_results(graph, results, provenance(machines))
    save_results(tree, out)
    return tree


def _machines(client: Client) -> dict[str, Any]:
    """Host, CPU and GPU models of every worker still connected (for the results' provenance);
    an empty mapping if the cluster cannot answer (the results are written all the same)."""
    try:
        return client.run(machine)
    except Exception as exc:  # a worker lost at the very end must not cost the run its results
        log.warning("compressflow: could not ask the workers what machines they run on: %s", exc)
        return {}


def _submit(client: Client, graph: TaskGraph, workers: list[str]) -> dict[str, Any]:
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
        durations = _known_durations(graph, stage, keys)
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


def _known_durations(graph: TaskGraph, stage: str, keys: list[str]) -> dict[str, float] | None:
    """Task key -> duration from the ledger of ``scheduling.durations_from`` (tasks matched by
    the ``key_by`` sweep axis; unmatched ones get the mean), or None without one."""
    sched = graph.spec.stages[stage].scheduling
    key_by = sched.key_by or next(iter(graph.spec.stages[stage].sweep), None)
    if sched.durations_from is None or key_by is None:
        return None
    try:
        ledger = open_results(sched.durations_from)["tasks"].to_dataset()
    except FileNotFoundError as exc:
        raise InputError(f"stages.{stage}.scheduling.durations_from: {exc}") from None
    known = durations_from_ledger(ledger, stage, key_by)
    default = sum(known.values()) / len(known) if known else 1.0
    return {k: known.get(str(graph.nodes[k].point.get(key_by)), default) for k in keys}


def _show_progress(graph: TaskGraph, futures: dict[str, Any], say) -> None:
    """Dask's progress bar on a terminal; one line per finished task elsewhere (logs, CI)."""
    if sys.stdout.isatty():
        progress(list(futures.values()))
        return
    nodes = graph.nodes
    for i, fut in enumerate(as_completed(list(futures.values())), 1):
        say(f"  done {i}/{len(futures)}: {nodes[fut.key].stage} {fut.key} ({fut.status})")


def _gather(client: Client, graph: TaskGraph, futures: dict[str, Any]) -> dict[str, LedgerEntry]:
    """Collect every task's record; a task Dask itself gave up on (e.g. its workers kept
    dying) becomes a failed record instead of aborting the collection of the others."""
    nodes = graph.nodes
    values = client.gather(list(futures.values()), errors="skip")
    done = dict(graph.reused)
    done.update((rec.key, rec) for rec in values)
    for key, fut in futures.items():
        if key not in done:
            node = nodes[key]
            exc = fut.exception()
            done[key] = LedgerEntry(key, node.stage, node.op, dict(node.point), status="failed",
                                   error=f"{type(exc).__name__}: {exc}".replace("\n", " "))
    return done


def _install_meter(client: Client, plugin: EnergyMeterPlugin) -> None:
    """Register the energy meter on every worker, present and future. The scheduler keeps the
    plugin before it tells the workers, so a worker that dies meanwhile (its broadcast fails)
    does not stop the run: its replacement gets the plugin when it joins."""
    try:
        client.register_plugin(plugin, name="compressflow-energy")
    except CommClosedError as exc:
        log.warning("a worker left while the energy meter was being installed (%s); continuing", exc)


def _workers_per_host(workers: dict[str, Any]) -> dict[str, int]:
    """Host → number of workers on it (host-wide energy shares are split over them)."""
    counts: dict[str, int] = {}
    for address in workers:
        host = get_address_host(address)
        counts[host] = counts.get(host, 0) + 1
    return counts


def _check_resources(workers: dict[str, Any], graph: TaskGraph) -> None:
    offered: dict[str, float] = {}
    for w in workers.values():
        for name, amount in (w.get("resources") or {}).items():
            offered[name] = max(offered.get(name, 0), amount)
    for stage, nodes in graph.stages.items():
        for name, amount in nodes[0].resources.items():
            if not offered.get(name, 0) >= amount:  # also refuses a NaN request, which no worker can meet
                raise InputError(
                    f"stages.{stage}.resources.{name}: needs {amount:g} but no worker offers that much "
                    f"(workers offer {offered or 'no resources'}); use a GPU cluster spec or drop the request"
                )


def _printer(enabled: bool):
    """Progress lines go to the ``compressflow.engine.runner`` logger at INFO."""
    def say(text: str) -> None:
        if enabled:
            log.info("%s", text)

    return say


def _progress_line(event: tuple[float, dict]) -> str:
    _, msg = event
    stage = msg.get("stage", "?")
    rest = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in msg.items() if k not in ("stage", "key"))
    return f"  [{stage}] {rest}"
