"""Attempt logs: the arithmetic of attempts, workers and energy per task, and a worker lost while
the meter is being installed does not stop the run."""

from __future__ import annotations

import pytest


def test_worker_lost_while_the_meter_is_installed_does_not_stop_the_run(caplog):
    """The benchmark found it: a worker killed during plugin registration made run() raise."""
    from distributed.comm.core import CommClosedError

    from compressflow.energy.plugin import EnergyMeterPlugin
    from compressflow.engine.submission import install_worker_plugin

    class Client:
        def register_plugin(self, plugin, name):
            assert name == "compressflow-energy"
            raise CommClosedError("in <TCP (closed) ConnectionPool.register_worker_plugin>: Stream is closed")

    install_worker_plugin(Client(), EnergyMeterPlugin())
    assert "a worker left while compressflow-energy was being installed" in caplog.text


def test_attempt_log_arithmetic():
    from compressflow.engine.execute import with_lost_energy
    from compressflow.rundir.attempts import lost_energy, parse_attempts

    lines = [
        "w0 1.0",                                          # an earlier version's start line: no energy known
        "w1 2.0 start a1",
        "w1 3.0 energy a1 0.001 0.0 0.0005",
        "w1 4.0 energy a1 0.002 0.0 0.001",               # cumulative: the last sample counts
        "w2 5.0 start a2",
        "w2 6.0 energy a2 0.003 0.0",                     # torn (a line cut short): skipped
        "w2 7.0 end a2 failed 0.0004 0.0001 nan",          # failed: its end reading counts; NaN adds nothing
        "w3 8.0 start a3",
        "w3 9.0 end a3 ok 0.01 0.0 0.002",                 # finished (e.g. its record was later rejected)
        "w4 10.0 start a4",                                # the attempt running now
        "w4 11.0 energy a4 0.5 0.0 0.5",
    ]
    attempts = parse_attempts(lines)
    assert [a.worker for a in attempts.values()] == ["w0", "w1", "w2", "w3", "w4"]
    assert attempts["a2"].status == "failed" and attempts["a1"].status == ""
    lost = lost_energy(attempts, current="a4")
    assert lost == pytest.approx({"cpu_kwh": 0.002 + 0.0004, "gpu_kwh": 0.0001, "ram_kwh": 0.001})
    reading = {"cpu_kwh": 0.01, "gpu_kwh": 0.0, "ram_kwh": 0.004, "energy_kwh": 0.014, "country": "USA",
               "method": "m"}
    total = with_lost_energy(reading, lost)
    assert total["energy_lost_kwh"] == pytest.approx(0.0035)
    assert total["energy_kwh"] == pytest.approx(0.014 + 0.0035)
    assert total["cpu_kwh"] == pytest.approx(0.0124) and total["ram_kwh"] == pytest.approx(0.005)
    # CO2 is computed once, where it is shown (energy.co2_grams), from energy_kwh: no reading carries it
    assert "co2_g" not in total and total["country"] == "USA" and total["method"] == "m"
