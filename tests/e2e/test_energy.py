"""Energy on real worker processes and a real LocalCluster: two workers on one machine do not each
report the whole machine, and the plugin meters every task.

The busy loops hash a large buffer: hashlib releases the GIL, like torch kernels do, so
CodeCarbon's 1 s sampling thread is not starved (see ``compressflow/energy/__init__.py``)."""

from __future__ import annotations

import logging
import multiprocessing as mp
import re
import time

import pytest

from compressflow import energy
from compressflow.energy import EnergyMeter, EnergyMeterPlugin, EnergyReading
from compressflow.energy import plugin as _plugin_module
from tests.support.cpu import busy


def _tdp_w(reading: EnergyReading) -> float:
    return float(re.search(r"tdp=([\d.]+)W", reading.method).group(1))


def _child_window(barrier, queue) -> None:
    m = EnergyMeter(n_workers_on_host=2)
    m.start()
    barrier.wait()
    with m.measure("busy") as r:
        busy(1.0)
    m.stop()
    queue.put(r)


@pytest.mark.slow
def test_two_worker_processes_do_not_each_report_the_whole_machine():
    """Each process gets its own CPU share; CodeCarbon's machine mode would give each the whole machine."""
    from codecarbon import OfflineEmissionsTracker

    # Fresh interpreters like Dask's spawned workers; the fork server pays the package import once.
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["compressflow.energy", __name__])
    barrier, queue = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_child_window, args=(barrier, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    logging.getLogger("codecarbon").setLevel(logging.ERROR)  # it logs before applying log_level
    machine = OfflineEmissionsTracker(
        country_iso_code="USA", tracking_mode="machine", log_level="error", output_methods=[], allow_multiple_runs=True
    )
    machine.start_task("warmup")
    machine.stop_task("warmup")
    barrier.wait(timeout=60)
    machine.start_task("window")
    time.sleep(1.0)
    whole = machine.stop_task("window")
    machine.stop()
    children = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    whole_cpu_kwh = whole.cpu_energy
    for r in children:
        assert r.cpu_kwh > 0
        assert r.cpu_kwh < 0.7 * whole_cpu_kwh  # one of two cores: about half of the machine
        assert r.cpu_kwh * 3.6e6 / r.duration_s <= 0.6 * _tdp_w(r)
    assert sum(r.cpu_kwh for r in children) < 1.2 * whole_cpu_kwh


def _task_on_worker(seconds: float):
    with energy.current_meter().measure("worker-task") as r:
        busy(seconds)
    return r, _plugin_module._plugin_users, energy.current_meter().country


@pytest.mark.slow
def test_plugin_on_local_cluster():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(EnergyMeterPlugin(country="FRA"))
        reading, plugin_users, country = client.submit(_task_on_worker, 0.3, pure=False).result()
    assert (plugin_users, country) == (1, "FRA")  # the plugin's meter, not a lazy default one
    assert isinstance(reading, EnergyReading) and reading.cpu_kwh > 0
