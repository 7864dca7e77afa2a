"""The Dask worker plugin that carries a plugin of a run to every worker (see
:mod:`compressflow.plugins`); apart so that checking a spec does not import distributed."""

from __future__ import annotations

import hashlib
import importlib
import logging
import sys
from pathlib import Path
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from compressflow.plugins import Plugin, files_of

__all__ = ["ShipPlugin"]

log = logging.getLogger("compressflow.plugins")


class ShipPlugin(WorkerPlugin):
    """A Dask worker plugin that makes one compressflow plugin importable on a worker and
    imports it, in ``setup`` (before the worker takes a task).

    A file or package travels inside the plugin and is written to
    ``<worker local directory>/compressflow-plugins/<digest>/``, which goes on ``sys.path``;
    a module name must be importable on the worker (installed there).

    Parameters
    ----------
    plugin : Plugin
        From :func:`import_plugins`.
    """

    def __init__(self, plugin: Plugin) -> None:
        self.module = plugin.module
        self.where = plugin.where
        self.files = files_of(plugin)
        digest = hashlib.sha256()
        for rel, data in sorted(self.files.items()):
            digest.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
        self.digest = digest.hexdigest()[:16]
        self.name = f"compressflow-plugin-{plugin.module}"

    def setup(self, worker: Any) -> None:
        if self.files:
            root = Path(worker.local_directory, "compressflow-plugins", self.digest)
            for rel, data in self.files.items():
                path = root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            if str(root) not in sys.path:
                sys.path.insert(0, str(root))
        if self.module not in sys.modules:  # an in-process worker shares the client's modules
            importlib.invalidate_caches()
            importlib.import_module(self.module)
        log.info("plugin %s (%s) imported on worker %s", self.module, self.where, worker.address)
