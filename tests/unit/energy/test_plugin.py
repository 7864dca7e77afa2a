"""The worker's meter across plugin registrations: every study registers the plugin again, and
one submitted while another study's task is measured must not stop that task's meter."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from compressflow.energy import plugin
from compressflow.energy.meter import EnergyMeter
from compressflow.energy.plugin import EnergyMeterPlugin, current_meter


@pytest.fixture
def fresh_process(monkeypatch):
    """No meter yet in this process, and no hardware probe: only which meter is in use is tested."""
    monkeypatch.setattr(plugin, "_meter", None)
    monkeypatch.setattr(plugin, "_meter_kwargs", None)
    monkeypatch.setattr(plugin, "_plugin_users", 0)
    stopped: list[EnergyMeter] = []
    monkeypatch.setattr(EnergyMeter, "start", lambda self: None)
    monkeypatch.setattr(EnergyMeter, "stop", lambda self: stopped.append(self))
    return stopped


def replace(old: EnergyMeterPlugin | None, new: EnergyMeterPlugin, worker) -> None:
    """What a Dask worker does when a plugin of the same name is registered again."""
    if old is not None:
        old.teardown(worker)
    asyncio.run(new.setup(worker))


def test_a_plugin_registered_again_mid_task_keeps_that_tasks_meter(fresh_process):
    stopped = fresh_process
    worker = SimpleNamespace(address="tcp://10.0.0.1:4000")
    first = EnergyMeterPlugin(country="FRA")
    replace(None, first, worker)
    meter = current_meter()
    with meter.measure("a running task"):
        second = EnergyMeterPlugin(country="FRA")  # another study, the same settings
        replace(first, second, worker)
        assert current_meter() is meter and stopped == []  # handed over, still measuring
        third = EnergyMeterPlugin(country="DEU")  # other settings: a meter of their own
        replace(second, third, worker)
        assert current_meter() is not meter and current_meter().country == "DEU" and stopped == [meter]
    newest = current_meter()
    third.teardown(worker)  # no task measured: the worker's last plugin stops its meter at once
    assert stopped == [meter, newest] and plugin._meter is None
