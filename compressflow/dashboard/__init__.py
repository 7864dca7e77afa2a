"""A "compressflow" page on the Dask scheduler's dashboard: per stage, tasks by state and kWh
and gCO₂ accumulating live, an accuracy-vs-CO₂ scatter of finished tasks and the per-epoch
curves of running ones, updated every second from the study's events
(:mod:`compressflow.engine.events`).

The page lives at the dashboard link with ``/status`` replaced by ``/compressflow``
(:func:`dashboard_link`); ``/compressflow/data.json`` serves its numbers as JSON and
``?study=ID`` picks a study where several ran on one scheduler (the latest by default).

The same page outlives the study: ``compressflow dashboard OUT [OUT ...]`` serves it from
finished (or interrupted, or still running) run directories, without a cluster
(:mod:`compressflow.dashboard.offline` reads them, :mod:`compressflow.dashboard.serve`
serves them). This package imports Dask (``distributed``) only where the scheduler's page
needs it, so that command does not.

Examples
--------
>>> from compressflow.dashboard import install_dashboard
>>> link = install_dashboard(client)  # doctest: +SKIP
>>> client.log_event("compressflow-study", study_event(graph, "s1", out=out))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from os import PathLike
from typing import TYPE_CHECKING, Any

from compressflow.dashboard._page import PATH
from compressflow.engine.events import task_summary

if TYPE_CHECKING:
    from distributed import Client

    from compressflow.dashboard._plugin import DashboardPlugin
    from compressflow.engine.graph import TaskGraph

__all__ = ["DashboardPlugin", "dashboard_link", "install_dashboard", "study_event"]

log = logging.getLogger("compressflow.dashboard")


def __getattr__(name: str) -> Any:
    if name == "DashboardPlugin":  # the scheduler plugin imports distributed: only when asked for
        from compressflow.dashboard._plugin import DashboardPlugin

        return DashboardPlugin
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "DashboardPlugin"})


def install_dashboard(client: Client) -> str | None:
    """Register :class:`DashboardPlugin` on ``client``'s scheduler (once: a second call is a
    no-op) and return the page's link.

    A scheduler that refuses the plugin (one without compressflow installed, or one that
    forbids plugins) costs only the page: a warning is logged and ``None`` returned.

    Parameters
    ----------
    client : distributed.Client

    Returns
    -------
    str or None
        The page's URL (:func:`dashboard_link`), or None when the plugin was refused or the
        scheduler has no dashboard.
    """
    from compressflow.dashboard._plugin import NAME, DashboardPlugin

    try:
        client.register_plugin(DashboardPlugin(), name=NAME)
    except Exception as exc:  # the run goes on without its page
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.warning("compressflow: the scheduler refused the dashboard page (%s: %s); the run goes on without it",
                    type(exc).__name__, reason)
        return None
    return dashboard_link(client)


def dashboard_link(client: Client) -> str | None:
    """``client.dashboard_link`` with its ``/status`` page replaced by ``/compressflow``
    (None when the scheduler has no dashboard)."""
    try:
        link = client.dashboard_link
    except Exception:  # no dashboard service on this scheduler
        return None
    if not link:
        return None
    base = link[: -len("/status")] if link.endswith("/status") else link.rstrip("/")
    return f"{base}/{PATH}"


def study_event(graph: TaskGraph, study_id: str, intensity: float | None = None, pue: float | None = None, *,
                out: str | PathLike[str] = "") -> dict[str, Any]:
    """The ``compressflow-study`` event of a submission of ``graph``
    (``client.log_event("compressflow-study", study_event(...))``, before its tasks run).

    Parameters
    ----------
    graph : TaskGraph
        The built graph: its stages (every task, reused ones too) and its reused records.
    study_id : str
        The submission's id (the ``study`` the tasks' events carry).
    intensity, pue : float, optional
        gCO₂ per kWh and the PUE; by default those of ``graph.spec.energy`` (as the results use).
    out : path
        The run directory.

    Returns
    -------
    dict
        ``study``, ``name``, ``out``, ``stages`` (stage → task keys), ``reused`` (key →
        :func:`~compressflow.engine.events.task_summary`), ``intensity_g_per_kwh``, ``pue``.
    """
    energy = graph.spec.energy
    if intensity is None:
        from compressflow.energy.carbon import carbon_intensity

        intensity = carbon_intensity(energy.country, energy.region)
    summaries = {}
    for key, entry in graph.reused.items():
        summary = task_summary(entry)
        summaries[key] = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in summary.items()}
    return {
        "study": str(study_id), "name": graph.spec.name, "out": str(out),
        "stages": {stage: [n.key for n in nodes] for stage, nodes in graph.stages.items()},
        "reused": summaries, "intensity_g_per_kwh": float(intensity),
        "pue": float(energy.pue if pue is None else pue),
    }
