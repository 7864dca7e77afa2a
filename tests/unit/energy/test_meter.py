"""The energy meter against real CodeCarbon (offline) in this process: the CPU-TDP model by hand,
CO₂ from the offline intensity, overlapping windows split not double-counted, RAM split over
workers, NVML counters and fallbacks, the CodeCarbon API it relies on.

The busy loops hash a large buffer: hashlib releases the GIL, like torch kernels do, so
CodeCarbon's 1 s sampling thread is not starved (see ``compressflow/energy/__init__.py``)."""

from __future__ import annotations

import math
import pickle
import re
import statistics
import threading
import time

import numpy as np
import psutil
import pytest

from compressflow.energy import EnergyMeter, EnergyMeterPlugin, EnergyReading, carbon_intensity, co2_grams
from compressflow.energy import meter as _meter_module
from compressflow.energy import nvml as _nvml
from compressflow.errors import InputError
from tests.support import ROOT
from tests.support.cpu import busy


def _tree_cpu_s() -> float:
    """CPU seconds of this process and its children: exactly what process-mode CodeCarbon counts."""
    me = psutil.Process()
    total = 0.0
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _tdp_w(reading: EnergyReading) -> float:
    return float(re.search(r"tdp=([\d.]+)W", reading.method).group(1))


@pytest.fixture(scope="module")
def meter():
    m = EnergyMeter(country="USA")
    m.start()
    yield m
    m.stop()


def test_busy_window_matches_codecarbon_cpu_model(meter):
    c0 = _tree_cpu_s()
    with meter.measure("busy") as r:
        busy(2.0)
    cpu_s = _tree_cpu_s() - c0
    assert r.cpu_kwh > 0 and r.ram_kwh > 0 and r.gpu_kwh == 0.0
    assert r.energy_kwh == r.cpu_kwh + r.gpu_kwh + r.ram_kwh
    assert r.duration_s == pytest.approx(2.0, abs=0.1)
    # CodeCarbon's CPU power here: TDP x (process CPU-seconds / wall) / logical CPUs
    expected = _tdp_w(r) * cpu_s / psutil.cpu_count() / 3.6e6
    assert r.cpu_kwh == pytest.approx(expected, rel=0.1)
    assert "cpu=codecarbon:" in r.method and "gpu=none" in r.method and "ram=codecarbon:" in r.method


def test_short_window_still_positive(meter):
    with meter.measure("short") as r:
        busy(0.05)
    assert r.cpu_kwh > 0 and r.energy_kwh > 0
    assert r.energy_kwh == r.cpu_kwh + r.gpu_kwh + r.ram_kwh


def test_longer_window_more_energy(meter):
    readings = []
    for seconds in (0.4, 1.2):
        with meter.measure(f"busy-{seconds}") as r:
            busy(seconds)
        readings.append(r)
    short, long = readings
    assert long.energy_kwh > short.energy_kwh and long.cpu_kwh > short.cpu_kwh
    assert long.ram_kwh / short.ram_kwh == pytest.approx(3.0, rel=0.15)  # RAM power ~constant
    assert 1.8 < long.cpu_kwh / short.cpu_kwh < 4.5  # CPU share may vary on a shared machine


def test_co2_formula_with_offline_intensity():
    from codecarbon.input import DataSource

    table = DataSource().get_global_energy_mix_data()
    usa, fra = carbon_intensity("USA"), carbon_intensity("fra")
    assert usa == pytest.approx(table["USA"]["carbon_intensity"])
    assert fra == pytest.approx(table["FRA"]["carbon_intensity"])
    assert fra < usa  # nuclear-heavy grid
    assert carbon_intensity("USA", "California") < usa
    # the one CO2 function: kWh x PUE x intensity, for a number or one value per task
    assert co2_grams(0.002, 1.67, 400.0) == pytest.approx(0.002 * 1.67 * 400.0, rel=1e-15)
    kwh = np.array([1e-3, 0.0, np.nan])
    np.testing.assert_allclose(co2_grams(kwh, 1.5, usa), [1e-3 * 1.5 * usa, 0.0, np.nan])
    for country in ("USA", "FRA"):  # the meter measures kWh only; its country goes to CodeCarbon
        m = EnergyMeter(country=country)
        with m.measure("co2") as r:
            busy(0.2)
        m.stop()
        assert r.country == country and r.energy_kwh > 0 and not hasattr(r, "co2_g")


def test_bad_input_is_one_line_input_error():
    with pytest.raises(InputError, match=r"energy.country='XYZ'.*USA") as e:
        carbon_intensity("XYZ")
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="energy.country"):
        EnergyMeter(country="Atlantis")
    with pytest.raises(InputError, match=r"energy.region='narnia'.*alabama"):
        carbon_intensity("USA", "Narnia")
    with pytest.raises(InputError, match="energy.n_workers_on_host"):
        EnergyMeter(n_workers_on_host=0)
    with pytest.raises(InputError, match="energy.country"):
        EnergyMeterPlugin(country="XYZ")  # fails on the client, before any worker


def test_reading_pickles_and_as_dict(meter):
    with meter.measure("pickle") as r:
        busy(0.05)
    back = pickle.loads(pickle.dumps(r))
    assert back == r and back.as_dict() == r.as_dict()
    assert set(r.as_dict()) == {
        "cpu_kwh", "gpu_kwh", "ram_kwh", "energy_kwh", "duration_s", "country", "method",
    }  # fmt: skip


def test_exception_inside_window_still_fills_reading(meter):
    with pytest.raises(RuntimeError, match="boom"):
        with meter.measure("fails") as r:
            assert math.isnan(r.energy_kwh)  # not filled until the window closes
            busy(0.2)
            raise RuntimeError("boom")
    assert r.cpu_kwh > 0 and r.energy_kwh == r.cpu_kwh + r.gpu_kwh + r.ram_kwh
    assert r.duration_s == pytest.approx(0.2, abs=0.1)


def test_empty_window_overhead_is_small(meter):
    times = []
    for _ in range(30):
        t0 = time.perf_counter()
        with meter.measure("empty"):
            pass
        times.append(time.perf_counter() - t0)
    # ~3 ms here (psutil scans /proc for child processes); a re-probe per window would be ~1.5 s
    assert statistics.median(times) < 0.025


@pytest.mark.parametrize("n", [1, 2, 3])
def test_ram_is_split_over_workers_on_host(n):
    """The host's RAM figure is CodeCarbon's reading divided by the workers on the host: checked
    on the meter's inputs (what CodeCarbon returned for the same window), not on wall-clock
    power, which moves with machine load."""
    m = EnergyMeter(n_workers_on_host=n)
    m.start()
    raw = []
    stop_task = m._tracker.stop_task

    def recording_stop_task(label):
        data = stop_task(label)
        raw.append(data)
        return data

    m._tracker.stop_task = recording_stop_task
    with m.measure("ram") as r:
        time.sleep(0.2)
    m.stop()
    assert len(raw) == 1 and raw[0].ram_energy > 0
    assert r.ram_kwh == pytest.approx(raw[0].ram_energy / n, rel=1e-12)
    assert f"n_workers_on_host={n}" in r.method.split(";ram=")[1]


def test_meter_refuses_a_codecarbon_without_the_attributes_it_reads(monkeypatch):
    """A CodeCarbon release that renamed a private attribute the meter reads fails loudly at
    meter start, naming what is missing and the tested range, instead of mislabelling readings."""
    from compressflow.energy import TESTED_CODECARBON, MeterCompatibilityError, check_codecarbon_api

    m = EnergyMeter()
    m.start()
    tracker = m._tracker
    cpu = next(h for h in tracker._hardware if type(h).__name__ == "CPU")
    tracker.start_task("x")
    data = tracker.stop_task("x")
    check_codecarbon_api(tracker, data)  # the installed release passes
    m.stop()
    del cpu._tdp  # as a release that renamed it would leave it
    with pytest.raises(MeterCompatibilityError, match=r"lacks CPU\._tdp, which the energy meter reads"):
        check_codecarbon_api(tracker, data)

    required = {**_meter_module.CODECARBON_ATTRIBUTES, "RAM": ("_force_ram_power", "_renamed_in_a_later_release")}
    monkeypatch.setattr(_meter_module, "CODECARBON_ATTRIBUTES", required)
    fresh = EnergyMeter()
    with pytest.raises(MeterCompatibilityError) as err:
        fresh.start()
    msg = str(err.value)
    assert "\n" not in msg and "RAM._renamed_in_a_later_release" in msg and TESTED_CODECARBON in msg
    assert fresh._tracker is None  # no half-started meter


def test_installed_codecarbon_is_in_the_declared_tested_range():
    import codecarbon
    from packaging.specifiers import SpecifierSet

    from compressflow.energy import TESTED_CODECARBON

    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"codecarbon{TESTED_CODECARBON}"' in pyproject
    assert codecarbon.__version__ in SpecifierSet(TESTED_CODECARBON)


def test_concurrent_windows_in_one_process_are_split_not_double_counted(meter):
    readings: dict[str, EnergyReading] = {}

    def task(name):
        with meter.measure(name) as r:
            busy(1.0)
        readings[name] = r

    c0 = _tree_cpu_s()
    threads = [threading.Thread(target=task, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cpu_s = _tree_cpu_s() - c0
    a, b = readings["a"], readings["b"]
    assert "shared=2" in a.method and "shared=2" in b.method
    assert a.cpu_kwh + b.cpu_kwh == pytest.approx(_tdp_w(a) * cpu_s / psutil.cpu_count() / 3.6e6, rel=0.15)


class FakeHandle:
    """Stands in for an NVML device handle: scripted total-energy readings in mJ."""

    def __init__(self, readings):
        self._readings = iter(readings)

    def read(self) -> int:
        return next(self._readings)


def test_nvml_counter_converts_millijoules_to_kwh():
    assert _nvml.mj_to_kwh(3.6e9) == 1.0
    counter = _nvml.GpuEnergyCounter(FakeHandle([10_000, 10_000, 10_000 + 7_200_000]), "7", read=FakeHandle.read)
    counter, method = _nvml.checked(counter)
    assert method == "gpu=nvml:total-energy-counter(device 7)"
    start = counter.read_mj()
    assert counter.kwh_since(start) == pytest.approx(0.002)  # 7.2e6 mJ = 7.2 kJ = 2 Wh


def test_nvml_unreadable_handle_falls_back_to_none():
    counter, method = _nvml.checked(_nvml.GpuEnergyCounter(FakeHandle([]), "0"))  # real pynvml, fake handle
    assert counter is None and method.startswith("gpu=none(") and ";" not in method


def test_meter_gpu_falls_back_without_nvml():
    m = EnergyMeter(gpu_index=0)
    with m.measure("gpu") as r:
        busy(0.05)
    m.stop()
    if "gpu=nvml" in r.method:  # a machine with an NVIDIA driver
        assert r.gpu_kwh >= 0
    else:
        assert r.gpu_kwh == 0.0 and "gpu=none(" in r.method
    assert r.energy_kwh == r.cpu_kwh + r.gpu_kwh + r.ram_kwh


def test_nvml_device_id_follows_cuda_visible_devices():
    assert _nvml.nvml_device_id(None, {}) is None
    assert _nvml.nvml_device_id(2, {}) == "2"
    assert _nvml.nvml_device_id(None, {"CUDA_VISIBLE_DEVICES": "3"}) == "3"
    assert _nvml.nvml_device_id(None, {"CUDA_VISIBLE_DEVICES": "3,1"}) is None  # ambiguous
    assert _nvml.nvml_device_id(0, {"CUDA_VISIBLE_DEVICES": "3,1"}) == "3"  # dask-cuda: own device first
    assert _nvml.nvml_device_id(1, {"CUDA_VISIBLE_DEVICES": "GPU-ab12,GPU-cd34"}) == "GPU-cd34"
    assert _nvml.nvml_device_id(0, {"CUDA_VISIBLE_DEVICES": "-1"}) is None
    assert _nvml.nvml_device_id(2, {"CUDA_VISIBLE_DEVICES": "0,1"}) is None
