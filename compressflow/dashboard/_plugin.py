"""The scheduler side: a :class:`~distributed.diagnostics.plugin.SchedulerPlugin` that keeps a
:class:`~compressflow.dashboard._state.Board` from the scheduler's event log and serves the
page, its data and BokehJS from the scheduler's own HTTP server (the dashboard's)."""

from __future__ import annotations

import json
import logging
import re
import weakref
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin
from tornado import web

from compressflow.dashboard._page import PATH, bokeh_static
from compressflow.dashboard._state import Board
from compressflow.engine.events import PROGRESS, STUDY, TASK

__all__ = ["DashboardPlugin", "NAME", "PATH"]

log = logging.getLogger("compressflow.dashboard")

NAME = "compressflow-dashboard"  #: the plugin's name on the scheduler
_ROUTED: weakref.WeakSet = weakref.WeakSet()  # schedulers whose HTTP server has our routes


class DashboardPlugin(SchedulerPlugin):
    """Adds the ``/compressflow`` page to the scheduler's dashboard.

    It follows the ``compressflow-study``, ``compressflow-task`` and ``compressflow-progress``
    events (:mod:`compressflow.engine.events`) through the ``log_event`` hook, and Dask's own
    transitions for the tasks that end without an event (Dask gave up on them, or they
    returned at once because an upstream task failed). Events logged before the plugin
    started are replayed from the scheduler's event log, so installing it mid-run is fine.

    Parameters
    ----------
    keep : int
        How many of the latest studies the page keeps (older ones are forgotten).
    """

    idempotent = True  # registered once per scheduler: a second register_plugin is a no-op
    name = NAME

    def __init__(self, keep: int = 20) -> None:
        self.board = Board(keep)
        self.scheduler: Any = None

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        past = [(t, topic, msg) for topic in (STUDY, TASK, PROGRESS) for t, msg in scheduler.get_events(topic)]
        for _, topic, msg in sorted(past, key=lambda e: e[0]):
            self.board.log_event(topic, msg)
        app = getattr(scheduler, "http_application", None)
        if app is None:
            log.warning("compressflow: the scheduler has no HTTP server; no dashboard page")
            return
        if scheduler not in _ROUTED:  # a re-registered plugin: the routes find the new one
            prefix = _prefix(app)
            kwargs = {"scheduler": scheduler}
            app.add_handlers(r".*", [
                (rf"{prefix}{PATH}/?", PageHandler, kwargs),
                (rf"{prefix}{PATH}/data\.json", DataHandler, kwargs),
                (rf"{prefix}{PATH}/static/(.*)", web.StaticFileHandler, {"path": bokeh_static()}),
            ])
            _ROUTED.add(scheduler)

    def log_event(self, topic: str, msg: Any) -> None:
        if topic in (STUDY, TASK, PROGRESS):
            self.board.log_event(topic, msg)

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if start != "processing" or finish not in ("memory", "erred") or not isinstance(key, str):
            return
        if not self.board.open(key):  # the common case: not ours, or its end event came first
            return
        ts = self.scheduler.tasks.get(key) if self.scheduler is not None else None
        upstream = [dep.key for dep in ts.dependencies] if ts is not None else []
        self.board.settled(key, finish == "erred", upstream)  # Dask keys (engine.node.dask_key)


def _prefix(app: Any) -> str:
    """The dashboard's URL prefix (``dask scheduler --dashboard-prefix``), read off the route
    of its ``health`` page, which every scheduler serves; ``/`` without one."""
    for rule in app.wildcard_router.rules + app.default_router.rules:
        for inner in getattr(rule.target, "rules", [rule]):
            pattern = getattr(getattr(inner, "matcher", None), "regex", None)
            match = re.fullmatch(r"(/.*?)health\$?", pattern.pattern) if pattern is not None else None
            if match:
                return match.group(1)
    return "/"


class _Handler(web.RequestHandler):
    def initialize(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def board(self) -> Board:
        plugin = next((p for p in self.scheduler.plugins.values() if isinstance(p, DashboardPlugin)), None)
        return plugin.board if plugin is not None else Board()

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")


class PageHandler(_Handler):
    """``/compressflow[?study=ID]``: the page (the latest study by default)."""

    def get(self) -> None:
        from compressflow.dashboard._page import page

        if self.request.path.endswith("/"):  # the page's relative links assume no trailing slash
            self.redirect(self.request.path.rstrip("/") + (f"?{self.request.query}" if self.request.query else ""))
            return
        self.write(page(self.board().snapshot(self.get_argument("study", None)), self.request.path))


class DataHandler(_Handler):
    """``/compressflow/data.json[?study=ID]``: what the page polls."""

    def get(self) -> None:
        from compressflow.dashboard._page import payload

        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(payload(self.board().snapshot(self.get_argument("study", None)))))
