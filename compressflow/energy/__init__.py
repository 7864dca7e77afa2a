"""Per-task energy: CodeCarbon (offline) for CPU and RAM, NVML for the task's GPU; and CO₂,
computed once from kWh wherever it is shown (:func:`co2_grams`).

One :class:`EnergyMeter` per worker process (started by :class:`EnergyMeterPlugin`, or
lazily by :func:`current_meter` outside Dask) owns one ``OfflineEmissionsTracker``;
each task runs inside ``meter.measure(name)``, which is a CodeCarbon task window
(``start_task``/``stop_task``) plus, on a GPU worker, two reads of NVML's energy counter.

What is attributed to a task, and what is not
---------------------------------------------
* **CPU** — the tracker runs with ``tracking_mode="process"``. Where the machine has no
  readable energy counter (no RAPL, as in VMs), CodeCarbon 3.3.2 estimates this process's
  power as ``TDP × (CPU-seconds of this process and its children / wall seconds) /
  logical CPUs``: a worker busy on one of two cores gets half the TDP, and two workers
  together never exceed it. Idle/static CPU power is attributed to nobody. The TDP comes
  from CodeCarbon's CPU table, or 4 W per logical CPU for unknown models. With
  ``"machine"`` tracking every tracker would report the whole machine's load, so N workers
  would count it N times. Where CodeCarbon reads a machine-wide counter instead (RAPL,
  Windows EMI, Power Gadget, powermetrics), it ignores ``tracking_mode``; that figure is
  split equally over ``n_workers_on_host``.
* **RAM** — CodeCarbon's process-mode model sizes DIMMs from this process's resident
  memory with a floor of two DIMMs (10 W on x86) *per tracker*. The floor is a host cost,
  so the RAM figure is split over ``n_workers_on_host``; otherwise the host's RAM power
  would grow with the number of workers.
* **GPU** — only the device this process computes on (``gpu_index`` or a single
  ``CUDA_VISIBLE_DEVICES`` entry), read from NVML's total-energy counter; a device that is
  not identified or has no counter gives 0 kWh and ``gpu=none(<why>)``. CodeCarbon's own
  GPU figure is not used.
* **Concurrent tasks in one process** (``threads_per_worker > 1``): CodeCarbon measures
  one task at a time, so the meter cuts the time line at every task start/end into
  segments and splits each segment's energy equally among the tasks running in it
  (``shared=N`` in ``method``). The sum over tasks is the process's energy, never more.
* CO₂ is ours, in one function (:func:`co2_grams`): ``energy_kwh × pue × intensity`` with
  CodeCarbon's offline intensity tables; ``energy_kwh`` itself excludes PUE (CodeCarbon's
  ``pue`` is pinned to 1).

Caveat (CodeCarbon 3.3.2): its 1 s sampler reads wall time, then CPU time; a sample whose
thread is held up between the two (GIL-holding Python loop on an oversubscribed machine)
over-estimates. We saw +10-19 % once on a loaded 2-core VM; repeated runs otherwise agree
with the process's CPU time within 1 %.

The names are imported on first use: CO₂ (:mod:`.carbon`) needs neither Dask nor the meter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lazy_loader as lazy

if TYPE_CHECKING:
    from compressflow.energy.carbon import carbon_intensity, co2_grams
    from compressflow.energy.meter import (CODECARBON_ATTRIBUTES, TESTED_CODECARBON, EnergyMeter, EnergyReading,
                                           MeterCompatibilityError, check_codecarbon_api)
    from compressflow.energy.plugin import EnergyMeterPlugin, current_meter

__getattr__, __dir__, __all__ = lazy.attach(__name__, submod_attrs={
    "carbon": ["carbon_intensity", "co2_grams"],
    "meter": ["CODECARBON_ATTRIBUTES", "EnergyMeter", "EnergyReading", "MeterCompatibilityError", "TESTED_CODECARBON",
              "check_codecarbon_api"],
    "plugin": ["EnergyMeterPlugin", "current_meter"],
})
