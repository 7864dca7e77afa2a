"""One meter per worker process: the Dask worker plugin that owns it and :func:`current_meter`."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from distributed.comm.addressing import get_address_host
from distributed.diagnostics.plugin import WorkerPlugin

from compressflow.energy.meter import EnergyMeter

__all__ = ["EnergyMeterPlugin", "current_meter"]


_meter_lock = threading.Lock()
_meter: EnergyMeter | None = None
_meter_kwargs: dict[str, Any] | None = None  # what the plugin made _meter with (None: a lazy default one)
_plugin_users = 0  # workers in this process whose plugin owns _meter


def current_meter(**defaults: Any) -> EnergyMeter:
    """The meter of this worker process (set up by :class:`EnergyMeterPlugin`).

    Outside a worker with the plugin, a process-local meter built from ``defaults``
    (:class:`EnergyMeter` arguments) is created on first use and started on its first
    :meth:`~EnergyMeter.measure`, so stage functions also run without Dask. Once a meter
    exists, ``defaults`` are ignored. Note: a process-mode tracker counts the process's
    children too, so do not measure in a process that spawned busy Dask workers.
    """
    global _meter
    with _meter_lock:
        if _meter is None:
            _meter = EnergyMeter(**defaults)
        return _meter


class EnergyMeterPlugin(WorkerPlugin):
    """Worker plugin that starts this process's :class:`EnergyMeter` (name ``"compressflow-energy"``).

    Arguments are those of :class:`EnergyMeter` and are validated on construction, so a
    bad country fails at registration on the client. Workers sharing a process (threads
    instead of processes) share one meter; the last one to close stops it, unless a task is
    being measured: every study registers the plugin again (Dask tears the old one down first),
    and a study submitted to a client while another one's tasks run must not stop their meter;
    the new plugin takes it over when its settings are the same (else it starts its own, and
    the running tasks keep what was measured so far).

    Examples
    --------
    >>> client.register_plugin(EnergyMeterPlugin(country="FRA"))  # doctest: +SKIP
    """

    name = "compressflow-energy"

    def __init__(self, country: str = "USA", region: str | None = None, gpu_index: int | None = None,
                 n_workers_on_host: int | dict[str, int] = 1) -> None:
        per_host = n_workers_on_host if isinstance(n_workers_on_host, dict) else {}
        default = 1 if isinstance(n_workers_on_host, dict) else n_workers_on_host  # {}: no worker yet
        kwargs: dict[str, Any] = dict(country=country, region=region, gpu_index=gpu_index, n_workers_on_host=default)
        EnergyMeter(**kwargs)  # validate now, on the client
        self.meter_kwargs = kwargs
        self.workers_per_host = dict(per_host)

    def _kwargs_for(self, worker: Any) -> dict[str, Any]:
        """Resolve per-host settings on the worker: its host's worker count (``n_workers_on_host``
        may map host → count) and, on a worker advertising a ``GPU`` resource with no explicit
        index, the first visible device (dask-cuda puts each worker's own GPU first)."""
        kwargs = dict(self.meter_kwargs)
        host = get_address_host(getattr(worker, "address", "") or "")
        kwargs["n_workers_on_host"] = self.workers_per_host.get(host, kwargs["n_workers_on_host"])
        resources = getattr(getattr(worker, "state", None), "total_resources", None) or {}
        if kwargs["gpu_index"] is None and resources.get("GPU"):
            kwargs["gpu_index"] = 0
        return kwargs

    async def setup(self, worker: Any) -> None:
        global _meter, _meter_kwargs, _plugin_users
        kwargs = self._kwargs_for(worker)
        with _meter_lock:
            if _plugin_users == 0 and (_meter is None or kwargs != _meter_kwargs):
                old, _meter, _meter_kwargs = _meter, EnergyMeter(**kwargs), kwargs
                if old is not None:
                    old.stop()
            _plugin_users += 1
            meter = _meter
        assert meter is not None  # set above or by an earlier setup
        # ~1.5 s hardware probe: keep it off the worker's event loop (heartbeats)
        await asyncio.to_thread(meter.start)

    def teardown(self, worker: Any) -> None:
        global _meter, _meter_kwargs, _plugin_users
        with _meter_lock:
            _plugin_users = max(_plugin_users - 1, 0)
            if _plugin_users > 0 or _meter is None or _meter.measuring:  # measuring: kept for the next setup
                return
            meter, _meter, _meter_kwargs = _meter, None, None
        meter.stop()
