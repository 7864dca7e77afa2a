"""Shared fixtures: one real in-process-spawned Dask LocalCluster for the session (``client``,
the e2e tests'), op contexts for the op tests, and a registry state restored after a test."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def client():
    """A real two-worker LocalCluster (processes, one thread each), as the runner builds it,
    but on plain TCP (``security="none"``): tests pass its address to the CLI as a string, which
    carries no TLS credentials. The TLS default is tested in tests/e2e/test_cluster.py."""
    from distributed import Client

    from compressflow.engine.cluster import local_cluster

    with local_cluster(n_workers=2, dashboard_address=":0", security="none") as cluster, Client(cluster) as c:
        yield c


# -- op contexts for the op tests: progress recorded, a stand-in energy meter (no Dask, no CodeCarbon)


class CountingMeter:
    """Stands in for the worker's :class:`~compressflow.energy.EnergyMeter`: every read of
    ``energy_so_far`` returns 1 mWh more than the one before (a cumulative, rising reading)."""

    def __init__(self) -> None:
        self.reads = 0

    def energy_so_far(self) -> float:
        self.reads += 1
        return 1e-6 * self.reads  # kWh


@pytest.fixture
def metered_context():
    """``make(key, stage, data, out)`` → an :class:`~compressflow.ops.OpContext` with a
    :class:`CountingMeter` that also keeps every progress event it reports (``.events``)."""
    from compressflow.ops import OpContext  # (imported here: collecting the tests must not import torch)

    @dataclass
    class RecordingContext(OpContext):
        events: list[dict[str, Any]] = field(default_factory=list)

        def progress(self, **values: Any) -> None:
            self.events.append(values)
            super().progress(**values)

    def make(key: str, stage: str, data: dict, out) -> OpContext:
        return RecordingContext(key, stage, data, out, meter=CountingMeter())

    return make


@pytest.fixture
def fresh_names():
    """Restore every registry, the plugin load state and the user modules (plugins) imported
    meanwhile afterwards, so a user op registered by one test does not leak into the next.

    Installed modules and compressflow's own imported meanwhile stay: imported twice in one
    process, torch's C extensions crash and xarray/pandas hold two copies of their classes."""
    import sys
    from pathlib import Path

    import compressflow
    from compressflow import plugins, registries
    from compressflow.ops.signature import _signature
    from compressflow.registries import BLOCKS, DATASETS, LOSSES, MODELS, OPS, SUMMARIES

    kept = (sys.prefix, sys.base_prefix, str(Path(compressflow.__file__).parent))

    def installed(module) -> bool:
        file = getattr(module, "__file__", None)
        return file.startswith(kept) if file else module.__name__ in sys.builtin_module_names

    registries.load()
    regs = (BLOCKS, DATASETS, LOSSES, MODELS, OPS, SUMMARIES)
    items = [dict(r._items) for r in regs]
    info = [dict(r._info) for r in regs]
    state = dict(registries._state)
    modules = set(sys.modules)
    path = list(sys.path)
    imported = dict(plugins._imported)
    yield
    plugins._imported.clear()
    plugins._imported.update(imported)
    for reg, saved, facts in zip(regs, items, info):
        reg._items.clear()
        reg._items.update(saved)
        reg._info.clear()
        reg._info.update(facts)
    registries._state.update(state)
    for name in set(sys.modules) - modules:
        if not installed(sys.modules[name]):
            del sys.modules[name]
    sys.path[:] = path
    _signature.cache_clear()


@pytest.fixture
def small_disk(tmp_path):
    """A folder on a real small filesystem (a tmpfs of ``tests.support.disk.SIZE`` bytes) for
    full-disk tests; skipped where mounting is not permitted (not root, no CAP_SYS_ADMIN)."""
    from tests.support.disk import mounted_tmpfs

    disk = tmp_path / "disk"
    disk.mkdir()
    with mounted_tmpfs(disk):
        yield disk
