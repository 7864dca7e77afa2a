"""Shipping a run's plugins (:mod:`compressflow.plugins`) to every worker of its cluster: the
Dask worker plugin that carries one, and :func:`install`, which registers them."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

from collections.abc import Iterable

from distributed.comm.core import CommClosedError
from distributed.diagnostics.plugin import WorkerPlugin

from compressflow.errors import PluginError, one_line
from compressflow.plugins import Plugin, ShippedFile, edited_since_import, files_digest, files_of, forget, imported

__all__ = ["ShipPlugin", "install"]

log = logging.getLogger("compressflow.plugins")


class ShipPlugin(WorkerPlugin):
    """A Dask worker plugin that makes one compressflow plugin importable on a worker and
    imports it, in ``setup`` (before the worker takes a task).

    A file or package travels inside the plugin and is written to
    ``<worker local directory>/compressflow-plugins/<digest>/``, which goes on ``sys.path``,
    each file with the permission bits it has on the client (a 0600 file stays 0600);
    a module name must be importable on the worker (installed there). A file or package
    edited since this worker imported it is imported again (what it registered is forgotten
    first, :func:`compressflow.plugins.forget`), so a long-lived worker runs the edit.

    Parameters
    ----------
    plugin : Plugin
        From :func:`import_plugins`.
    """

    def __init__(self, plugin: Plugin) -> None:
        self.module = plugin.module
        self.where = plugin.where
        self.files = files_of(plugin)
        self.digest = files_digest(self.files)
        self.name = f"compressflow-plugin-{plugin.module}"

    def setup(self, worker: Any) -> None:
        if self.files:
            root = Path(worker.local_directory, "compressflow-plugins", self.digest)
            for rel, shipped in self.files.items():
                _write(root / rel, shipped)
            if str(root) not in sys.path:
                sys.path.insert(0, str(root))
        if self.files and edited_since_import(self.module, self.digest):
            forget(self.module)  # the plugin was edited since this worker imported it: import the edit
        if self.module not in sys.modules:  # an in-process worker shares the client's modules
            importlib.invalidate_caches()
            importlib.import_module(self.module)
            if self.files:
                imported(self.module, self.digest)
        log.info("plugin %s (%s) imported on worker %s", self.module, self.where, worker.address)


def _write(path: Path, shipped: ShippedFile) -> None:
    """Write ``shipped`` at ``path`` with its mode from the start (never readable by others for a
    moment), replacing what is there (a read-only file of an earlier setup too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o600)
    with open(fd, "wb") as f:
        f.write(shipped.data)
        os.fchmod(fd, shipped.mode)
    os.replace(tmp, path)


def install(client: Any, plugins: Iterable[Plugin]) -> None:
    """Register every plugin with the scheduler as a :class:`ShipPlugin`: current workers
    import it now, workers that join later before their first task.

    Raises
    ------
    PluginError
        A plugin failed to import on a worker (e.g. a package it imports is not installed
        there); the cause is chained.
    """
    for plugin in plugins:
        try:
            client.register_plugin(ShipPlugin(plugin), name=f"compressflow-plugin-{plugin.module}")
        except CommClosedError as exc:  # a worker left meanwhile; the scheduler still has the plugin
            log.warning("a worker left while plugin %s was being installed (%s); continuing", plugin.module, exc)
        except Exception as exc:
            raise PluginError(f"{plugin.where}: importing {plugin.source!r} on a worker failed: "
                              f"{type(exc).__name__}: {one_line(exc)}; install what it needs on the workers") from exc
