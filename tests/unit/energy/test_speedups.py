"""The kernel-children lookup the meter gives CodeCarbon finds exactly what psutil finds."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import psutil
import pytest

from compressflow.energy import EnergyMeter
from compressflow.energy._speedups import descendants

pytestmark = pytest.mark.skipif(not os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children"),
                                reason="kernel without /proc/<pid>/task/<tid>/children")


@pytest.fixture
def family():
    """A child that has a child of its own, both sleeping; yields their pids."""
    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 30
    while time.time() < deadline and not psutil.Process(child.pid).children():
        time.sleep(0.05)
    grandchild = psutil.Process(child.pid).children()[0].pid
    yield child.pid, grandchild
    for pid in (grandchild, child.pid):
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass
    child.wait(timeout=30)


def test_descendants_are_psutils_recursive_children(family):
    child, grandchild = family
    found = descendants(os.getpid())
    assert {child, grandchild} <= set(found)
    assert set(found) == {p.pid for p in psutil.Process().children(recursive=True)}
    assert descendants(child) == [grandchild]


def test_meter_counts_the_same_processes_as_codecarbon_did(family):
    child, grandchild = family
    m = EnergyMeter()
    m.start()
    try:
        hw = {type(h).__name__: h for h in m._tracker._hardware}
        cpu_pids = set(hw["CPU"]._get_process_cpu_times())
        assert cpu_pids == {os.getpid(), *(p.pid for p in psutil.Process().children(recursive=True))}
        assert {child, grandchild} <= cpu_pids
        rss = hw["RAM"]._get_children_memories()
        assert len(rss) == len(cpu_pids) - 1 and all(r > 0 for r in rss)
        with m.measure("window") as r:
            time.sleep(0.05)
        assert r.cpu_kwh >= 0 and r.ram_kwh > 0
    finally:
        m.stop()


def test_reused_sampler_keeps_codecarbons_timing_on_one_thread():
    from compressflow.energy._speedups import ReusedThreadScheduler

    calls: list[tuple[float, int]] = []
    sched = ReusedThreadScheduler(0.2, lambda: calls.append((time.monotonic(), threading.get_ident())))
    t0 = time.monotonic()
    sched.start()
    time.sleep(0.5)
    sched.stop()
    n = len(calls)
    assert n == 2 and 0.15 < calls[0][0] - t0 < 0.35  # first sample one interval after start, then every interval
    time.sleep(0.3)
    assert len(calls) == n  # nothing while stopped
    sched.start()
    time.sleep(0.1)
    sched.stop()  # a window shorter than the interval: no sample, as with a cancelled Timer
    sched.start()
    time.sleep(0.3)
    sched.stop()
    assert len(calls) == n + 1
    assert len({ident for _, ident in calls}) == 1  # one thread for every window


def test_meter_windows_use_the_reused_sampler(monkeypatch):
    from compressflow.energy._speedups import ReusedThreadScheduler

    m = EnergyMeter()
    m.start()
    try:
        assert isinstance(m._tracker._scheduler_monitor_power, ReusedThreadScheduler)
        threads = threading.active_count()
        for i in range(20):
            with m.measure(f"w{i}"):
                pass
        assert threading.active_count() <= threads + 1
        with m.measure("long") as r:
            time.sleep(1.3)  # past one sampling interval
        assert r.ram_kwh > 0 and r.duration_s == pytest.approx(1.3, abs=0.3)
    finally:
        m.stop()
