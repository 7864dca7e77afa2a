"""``submit``: start a study and return at once with a :class:`Study` handle — progress, partial
results, per-stage status, cancelling — while the study runs on its cluster in the background.
:func:`compressflow.run` is ``submit(...).result()``.

The handle learns what happens from two sources: the tasks' futures (a finished task's ledger
entry is collected as soon as it finishes, so :meth:`Study.results` needs no round trip) and the
events the tasks publish (:mod:`compressflow.engine.events`: which tasks are running, their
epochs and energy so far), which the dashboard page reads too."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import xarray as xr
from distributed import as_completed

from compressflow._console import console
from compressflow.api.search_steps import advance, trial_energy
from compressflow.dashboard import install_dashboard, study_event
from compressflow.data.load import check_data
from compressflow.energy.carbon import carbon_intensity
from compressflow.energy.plugin import EnergyMeterPlugin
from compressflow.engine.cancel import CancelPlugin
from compressflow.engine.cluster import connect
from compressflow.engine.events import PROGRESS, STUDY, TASK, RunningTasks, follow
from compressflow.engine.execute import PreloadPlugin
from compressflow.engine.graph import build_graph, expand
from compressflow.engine.main_guard import refuse_reimport
from compressflow.engine.node import task_of
from compressflow.engine.provenance import provenance
from compressflow.engine.resume import plan_resume
from compressflow.engine.search import Search, searches
from compressflow.engine.shipping import install as install_plugins
from compressflow.engine.status import StatusTable, status_of_graph, study_html
from compressflow.engine.submission import (check_resources, install_worker_plugin, load_data_first, lost_entry, machines,
                                            progress_line, submit_graph, workers_per_host)
from compressflow.errors import InputError
from compressflow.plugins import Plugin, dedupe, import_plugins
from compressflow.results import build_results, to_dataframe
from compressflow.results.store import check_results_store, save_results
from compressflow.rundir import RunDir
from compressflow.rundir.records import LedgerEntry
from compressflow.spec import PipelineSpec, check_models, load_spec

__all__ = ["Study", "submit"]

log = logging.getLogger("compressflow.study")

#: seconds a Ctrl-C waits for the cancelled study's running tasks to reach an epoch boundary
CANCEL_GRACE_S = 30.0


def submit(
    spec: str | os.PathLike | dict | PipelineSpec,
    cluster: Any = None,
    out: str | os.PathLike | None = None,
    *,
    plugins: Sequence[str | os.PathLike | Plugin] = (),
    show_progress: bool = False,
) -> Study:
    """Start a compression study and return at once with its :class:`Study` handle.

    Everything that can be refused cheaply is checked before this returns (spec, plugins,
    data options and location, output directory, cluster, resources); a dataset whose files
    are there but damaged is found by the first worker that loads it, before any task runs,
    and :meth:`Study.result` raises its ``DataError``. The run directory stays locked, and a
    cluster started here stays up, until the study ends; then the results are written to
    ``out/results.zarr``.

    Parameters
    ----------
    spec, cluster, out, plugins
        As for :func:`compressflow.run`.
    show_progress : bool
        Also log the dashboard link and per-task / per-epoch progress lines while it runs
        (shown on stderr unless you configured the ``compressflow`` logger). In Jupyter,
        :meth:`Study.progress` shows a widget instead.

    Returns
    -------
    Study

    Raises
    ------
    InputError
        Bad spec, plugin, data location, cluster or output directory.

    Examples
    --------
    >>> study = compressflow.submit("tasks/quickstart.yaml")      # doctest: +SKIP
    >>> study.progress(); partial = study.results(); tree = study.result()  # doctest: +SKIP
    """
    refuse_reimport()  # a worker process re-importing a script without the __main__ guard: say so, once
    extra = import_plugins([os.fspath(p) if isinstance(p, os.PathLike) else p for p in plugins])
    spec = load_spec(spec)
    check_models(spec)  # layer names and the like, which need the models built (on the meta device)
    shipped = dedupe([*import_plugins(spec.plugins), *extra])  # the spec's are absolute by now
    run_dir = RunDir(out) if out is not None else RunDir.default(spec.name)
    run_dir.check_writable()
    return Study(spec, cluster, run_dir, shipped, show_progress)


class Study:
    """A submitted study: ask it how far it got, read what finished, cancel stages, wait.

    Made by :func:`submit`. Thread-safe: the background thread that collects the tasks and
    the client's event handlers update it while you read it.
    """

    def __init__(self, spec: PipelineSpec, cluster: Any, run_dir: RunDir, plugins: list[Plugin],
                 show_progress: bool) -> None:
        self.spec = spec
        self.out = run_dir.root
        self.id = uuid.uuid4().hex[:12]
        self._show = show_progress
        self._lock = threading.Lock()
        self._finished = threading.Event()
        self._done: dict[str, LedgerEntry] = {}
        self._running = RunningTasks(self.id)  # key -> latest progress (epoch, energy, worker)
        self._cancelled: list[str] = []
        self._error: BaseException | None = None
        self._tree: xr.DataTree | None = None
        self._machines: dict[str, Any] = {}
        self._outer = contextlib.ExitStack()  # run lock + console: released when the study ends
        self._cluster = contextlib.ExitStack()  # the client (and a cluster started for the study)
        try:
            self._start(cluster, run_dir, plugins)
        except BaseException:
            self._cluster.close()
            self._outer.close()
            raise
        self._thread = threading.Thread(target=self._collect, name=f"compressflow-study-{self.id}", daemon=True)
        self._thread.start()

    # -- start (synchronous: everything refusable is refused here) ---------------------------

    def _start(self, cluster: Any, run_dir: RunDir, plugins: list[Plugin]) -> None:
        spec = self.spec
        self._outer.enter_context(run_dir.lock())
        self._outer.enter_context(console(logging.INFO if self._show else logging.WARNING))
        check_results_store(run_dir.root)
        check_data(**spec.data.options())  # bad data options or a missing directory fail here, not on a worker
        stages = expand(spec)
        resolved = RunDir(run_dir.root.resolve())
        reused = plan_resume((n for nodes in stages.values() for n in nodes), resolved)  # the one read of the records
        self.graph = graph = build_graph(spec, resolved.root, reused, stages=stages, study=self.id)
        self.client = client = self._cluster.enter_context(connect(cluster))
        install_plugins(client, plugins)  # before any task: workers look the ops up by name
        workers = client.scheduler_info(n_workers=-1)["workers"]  # address -> info, read once
        if graph.delayed or graph.searches:  # a task will run: workers import torch meanwhile, in the background
            install_worker_plugin(client, PreloadPlugin())
        install_worker_plugin(client, EnergyMeterPlugin(country=spec.energy.country, region=spec.energy.region,
                                                n_workers_on_host=workers_per_host(workers)))
        check_resources(workers, graph)
        self.dashboard_link = client.dashboard_link
        #: the study's page on the scheduler's dashboard (None if the scheduler refused it)
        self.page = install_dashboard(client)
        log.info("compressflow: %d tasks in %d stages (%d reused from earlier runs); dashboard %s%s",
                 len(graph.nodes), len(graph.stages), len(graph.reused), self.dashboard_link,
                 f" (study page {self.page})" if self.page else "")
        # ended before the client closes (or when starting fails): other studies may share the client
        self._cluster.callback(follow(client, self.id, {TASK: self._on_task, PROGRESS: self._on_progress}))
        client.log_event(STUDY, study_event(graph, self.id, out=self.out))
        self.started = time.time()
        self._workers = sorted(workers)
        self._futures: dict[str, Any] = {}  # submitted by the background thread, once a worker has the data
        graph.searches = searches(spec, stages, parallel=len(workers))
        self._search_of: dict[str, Search] = {}  # task key -> the search it is a trial of
        self._run = resolved
        self._intensity = carbon_intensity(spec.energy.country, spec.energy.region)

    # -- background: collect every task as it finishes, then write the results ---------------

    def _collect(self) -> None:
        try:
            with self._cluster:
                load_data_first(self.client, self.graph, self.id)  # a damaged dataset: no task starts
                self._futures = submit_graph(self.client, self.graph, self._workers)
                # the study's own client's loop: as_completed otherwise takes the process's default
                # client, which may be another study's (closed) one, and then waits forever
                done = as_completed(list(self._futures.values()), loop=self.client.loop, with_results=True,
                                    raise_errors=False)
                for search in self.graph.searches:
                    advance(self, search, search.start(), done)
                for i, (fut, value) in enumerate(done, 1):
                    lost = not isinstance(value, LedgerEntry)  # Dask gave up on it: no entry of its own
                    entry = lost_entry(self.graph.nodes[task_of(fut.key, self.id) or ""], fut) if lost else value
                    with self._lock:
                        self._done[entry.key] = entry
                    self._running.ended(entry.key)
                    log.info("  done %d/%d: %s %s (%s)", i, len(self._futures), entry.stage, entry.key, entry.status)
                    search = self._search_of.get(entry.key)
                    if search is not None:
                        advance(self, search, search.finished(entry, energy=trial_energy(self, entry)), done)
                # release the futures: their Dask keys are this submission's own (engine.node.dask_key),
                # so the scheduler can forget them now
                self._futures = {}
                self._machines = machines(self.client)
            tree = self._build({**self.graph.reused, **self._done})
            save_results(tree, self.out)
            self._tree = tree
        except BaseException as exc:  # the handle re-raises it from result()
            self._error = exc
        finally:
            try:
                self._outer.close()
            finally:
                self._finished.set()

    def _build(self, tasks: dict[str, LedgerEntry]):
        graph = self.graph
        return build_results(self.spec, graph.stages, tasks, reused=graph.reused, searches=graph.searches,
                             provenance=provenance(self._machines))

    def _on_task(self, event: tuple[float, dict]) -> None:
        self._running.on_task(event[1], self._done)

    def _on_progress(self, event: tuple[float, dict]) -> None:
        _, msg = event
        self._running.on_progress(msg)
        with self._lock:
            search = self._search_of.get(msg.get("key", ""))
        if search is not None and isinstance(msg.get("epoch"), int):
            value = msg.get(search.search.directions()[0][0])
            if isinstance(value, (int, float)):
                search.report(msg["key"], msg["epoch"], float(value))
        if self._show:
            log.info("%s", progress_line(event))

    # -- what a user calls --------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """True once every task ended and the results were written (or writing them failed)."""
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the study ends (or ``timeout`` seconds pass); return :attr:`done`."""
        return self._finished.wait(timeout)

    def result(self) -> xr.DataTree:
        """Wait for the study and return its results (as written to ``out/results.zarr``).

        A first Ctrl-C cancels every stage (running tasks stop at their next epoch boundary,
        and what finished is written), waits up to :data:`CANCEL_GRACE_S` seconds for that, and
        raises ``KeyboardInterrupt``; a second one stops waiting at once. Finished tasks'
        records stay on disk either way.

        Raises
        ------
        KeyboardInterrupt
            After a Ctrl-C (the CLI exits 130).
        Exception
            Whatever stopped the study from finishing (e.g. its workers kept dying); finished
            tasks' records stay on disk and a re-run reuses them.
        """
        try:
            self._wait_interruptibly()
        except KeyboardInterrupt:
            log.warning("compressflow: cancelling: running tasks stop at their next epoch and what finished is "
                        "written (waiting at most %.0f s); press Ctrl-C (or send SIGTERM) again to stop waiting",
                        CANCEL_GRACE_S)
            self.cancel()
            if not self._wait_interruptibly(CANCEL_GRACE_S):
                log.warning("compressflow: stopped waiting: a task did not reach an epoch boundary within %.0f s; "
                            "finished tasks are kept and a re-run reuses them", CANCEL_GRACE_S)
            raise  # interrupted all the same (the CLI exits 130); the handle keeps following the study
        if self._error is not None:
            raise self._error
        assert self._tree is not None  # set with no error
        return self._tree

    def _wait_interruptibly(self, timeout: float = math.inf) -> bool:
        deadline = time.monotonic() + timeout
        while not self._finished.wait(0.2):  # short waits: Ctrl-C reaches the main thread
            if time.monotonic() > deadline:
                return False
        return True

    def cancel(self, stage: str | Sequence[str] | None = None) -> None:
        """Cancel ``stage`` (a name or several; all stages by default).

        Its tasks that have not started end ``cancelled`` at once; running ones stop at their
        next epoch boundary, keeping their energy in the ledger and their checkpoint, so a
        re-submission of the spec resumes them. Tasks downstream of a cancelled one end
        ``cancelled`` too; other stages go on.

        Raises
        ------
        InputError
            An unknown stage name (the message lists the stages).
        """
        names = list(self.graph.stages) if stage is None else [stage] if isinstance(stage, str) else list(stage)
        for name in names:
            if name not in self.graph.stages:
                raise InputError(f"cancel: no stage {name!r} in study {self.spec.name!r}; "
                                 f"stages: {', '.join(self.graph.stages)}")
        if self.done:
            return
        with self._lock:
            self._cancelled = list(dict.fromkeys([*self._cancelled, *names]))
            plugin = CancelPlugin(self.id, self._cancelled)
        for search in self.graph.searches:
            if search.stage in names:
                search.stop()  # no new trials; running ones stop at their next epoch
        with contextlib.suppress(Exception):  # the study may end meanwhile and close its client
            self.client.register_plugin(plugin, name=f"compressflow-cancel-{self.id}")

    def status(self) -> StatusTable:
        """Per stage: tasks reused from earlier runs, ran (finished in this run), running,
        pending, failed and cancelled (a cancelled stage's tasks not started: at once), and
        the kWh of its results (reused tasks' recorded energy included): a list of
        :class:`~compressflow.engine.status.StageStatus` that prints as a table."""
        with self._lock:
            done, running, cancelled = dict(self._done), set(self._running.snapshot()), list(self._cancelled)
        return status_of_graph(self.graph, done, running, cancelled)

    def results(self) -> xr.DataTree:
        """The results of everything finished so far, in the layout of the final results:
        tasks not finished yet are in the ledger and their stage groups with ``status``
        ``pending`` or ``running`` and NaN metrics. Not written to disk (the final results are,
        when the study ends)."""
        if self._tree is not None:
            return self._tree
        with self._lock:
            tasks = {**self.graph.reused, **self._done}
            running = set(self._running.snapshot())
        for key, node in self.graph.nodes.items():
            if key not in tasks:
                tasks[key] = LedgerEntry(key, node.stage, node.op, dict(node.point),
                                         status="running" if key in running else "pending")
        return self._build(tasks)

    def to_dataframe(self) -> Any:
        """:meth:`results` as one table, a row per task or sweep point (:func:`compressflow.to_dataframe`)."""
        return to_dataframe(self.results())

    def running(self) -> dict[str, dict[str, Any]]:
        """Key → latest progress of each running task (stage, worker, epoch, of, val_accuracy,
        energy_kwh, ...), from the tasks' progress events."""
        return self._running.snapshot()

    def progress(self) -> None:
        """Show progress: in Jupyter an ipywidgets display per stage (displayed once, kept up to
        date; returns at once), else until the study ends a bar on a terminal or, in a script
        or a log file, a line per stage whenever its counts change (no logging set-up needed)."""
        from compressflow.api.progress import show_progress

        show_progress(self)

    @property
    def state(self) -> str:
        """``running``, ``cancelling``, ``done``, ``cancelled`` or ``failed``."""
        if not self.done:
            return "cancelling" if self._cancelled else "running"
        if self._error is not None:
            return "failed"
        return "cancelled" if self._cancelled else "done"

    def __repr__(self) -> str:
        return f"<Study {self.spec.name!r} {self.state}, out={str(self.out)!r}>\n{self.status()!r}"

    def _repr_html_(self) -> str:
        return study_html(self.spec.name, self.state, str(self.out), self.page or self.dashboard_link, self.status())
