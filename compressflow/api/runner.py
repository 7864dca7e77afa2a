"""``run``: validate a spec, build its graph, run it on a Dask cluster, write the results —
blocking until the study ends (:func:`compressflow.submit` is the non-blocking form)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import xarray as xr

from compressflow._console import console
from compressflow.api.study import submit
from compressflow.engine.status import status_from_ledger, study_line
from compressflow.errors import DiskFull
from compressflow.plugins import Plugin
from compressflow.rundir import RunDir
from compressflow.spec import PipelineSpec

__all__ = ["run"]

log = logging.getLogger("compressflow.study")


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
        Show the dashboard link, a progress bar (on a terminal), per-task and per-epoch
        progress lines and, at the end, how many tasks were reused and ran
        (``compressflow: study 'quickstart' done: tasks: reused 2, ran 0; results in ...``).
        They are logged (logger ``compressflow.study``, level INFO; warnings at WARNING):
        unless you attach a handler to the ``compressflow`` logger, they are shown on stderr
        for the run (:func:`compressflow._console.console`).

    This is ``compressflow.submit(...).result()`` (:func:`compressflow.submit`), which returns at
    once with a handle instead: progress, partial results, status and cancelling while the
    study runs.

    Returns
    -------
    xarray.DataTree
        ``/tasks`` (the ledger) and one group per stage; also written to
        ``out/results.zarr``.

    Raises
    ------
    InputError
        Bad spec, plugin, data location, cluster or output directory — before any task runs.
    DiskFull
        The disk under ``out`` filled up (an ``InputError``); finished tasks' records stay on
        disk. When it was the results store that did not fit, its ``results`` attribute holds
        the results that could not be written.

    Examples
    --------
    >>> tree = compressflow.run("tasks/quickstart.yaml")            # doctest: +SKIP
    >>> float(tree["teacher"]["accuracy"])                          # doctest: +SKIP
    0.96
    """
    study = submit(spec, cluster, out, plugins=plugins, show_progress=show_progress)
    if show_progress and sys.stderr.isatty():
        study.progress()  # a bar on the terminal until the study ends
    try:
        tree = study.result()
    except DiskFull as exc:
        if exc.results is None and study.done:  # every task ended; only their results did not fit on disk
            exc.results = study.results()
        raise
    with console(logging.INFO if show_progress else logging.WARNING):
        log.info("%s; results in %s", study_line(study.spec.name, study.state,
                                                 status_from_ledger(tree["tasks"].to_dataset())), RunDir(study.out).results)
    return tree
