"""The per-process energy meter: one CodeCarbon tracker, one window per task (kWh only).

How each component is attributed to a task is described in :mod:`compressflow.energy`.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from compressflow.energy import _speedups
from compressflow.energy import nvml as _nvml
from compressflow.energy.carbon import _quiet_codecarbon, carbon_intensity
from compressflow.errors import InputError

__all__ = ["CODECARBON_ATTRIBUTES", "EnergyMeter", "EnergyReading", "MeterCompatibilityError", "TESTED_CODECARBON",
           "check_codecarbon_api"]

#: CodeCarbon releases the meter is tested with (pyproject.toml bounds the dependency to these).
TESTED_CODECARBON = ">=3.3.2,<3.4"

#: What the meter reads of CodeCarbon beyond its public API (checked by :meth:`EnergyMeter.start`):
#: object → attributes. The hardware objects are found by class name in ``tracker._hardware``.
CODECARBON_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "OfflineEmissionsTracker": ("_hardware", "_tasks", "start_task", "stop_task"),
    "CPU": ("_mode", "_tdp", "_tracking_mode", "_cpu_count"),
    "RAM": ("_force_ram_power",),
    "stop_task() result": ("cpu_energy", "ram_energy"),
}

log = logging.getLogger(__name__)
_NAN = float("nan")


@dataclass
class EnergyReading:
    """Energy of one task window; filled in when the window closes (NaN until then).

    Energies are IT energy in kWh (no PUE). ``method`` says how each component was obtained,
    ``;``-separated. CO₂ is not the meter's: it is computed from ``energy_kwh`` where it is
    shown (:func:`compressflow.energy.co2_grams`), with the spec's PUE and carbon intensity.
    """

    cpu_kwh: float = _NAN
    gpu_kwh: float = _NAN
    ram_kwh: float = _NAN
    energy_kwh: float = _NAN
    duration_s: float = _NAN
    country: str = ""
    method: str = ""

    def as_dict(self) -> dict:
        """The reading as a plain ``dict`` (field name → value)."""
        return asdict(self)


def _is_number(x: Any, kind: type | tuple[type, ...] = (int, float)) -> bool:
    return isinstance(x, kind) and not isinstance(x, bool)


class MeterCompatibilityError(InputError):
    """The installed CodeCarbon lacks something the meter relies on: the numbers it would
    produce could not be trusted, so the meter refuses to start."""


def check_codecarbon_api(tracker: Any, task_data: Any) -> None:
    """Raise :class:`MeterCompatibilityError` unless ``tracker`` (a started
    ``OfflineEmissionsTracker``) and ``task_data`` (what its ``stop_task`` returned) have every
    attribute in :data:`CODECARBON_ATTRIBUTES`.

    CodeCarbon exposes how it measures (CPU model or counter, TDP, RAM model) only through
    private attributes, which may change in any release; a silent fallback would mislabel
    every reading, so a missing one stops the meter loudly instead.
    """
    import codecarbon

    hardware = {type(hw).__name__: hw for hw in getattr(tracker, "_hardware", None) or []}
    objects = {"OfflineEmissionsTracker": tracker, "CPU": hardware.get("CPU"), "RAM": hardware.get("RAM"),
               "stop_task() result": task_data}
    missing = []
    for where, attrs in CODECARBON_ATTRIBUTES.items():
        obj = objects[where]
        if obj is None:
            missing.append(f"{where} (no such hardware object)")
        else:
            missing += [f"{where}.{attr}" for attr in attrs if not hasattr(obj, attr)]
    if missing:
        raise MeterCompatibilityError(
            f"energy: CodeCarbon {getattr(codecarbon, '__version__', '?')} lacks {', '.join(missing)}, which the "
            f"energy meter reads; install a tested release: pip install 'codecarbon{TESTED_CODECARBON}'"
        )


@dataclass(eq=False)
class _Window:
    name: str
    on_sample: Callable[[float, float, float], None] | None = None
    thread: int = field(default_factory=threading.get_ident)
    cpu: float = 0.0
    gpu: float = 0.0
    ram: float = 0.0
    shared: int = 1
    errors: list[str] = field(default_factory=list)


class EnergyMeter:
    """Per-process energy meter: one CodeCarbon tracker, one window per task.

    Parameters
    ----------
    country, region : str
        Where the machine draws its power (CodeCarbon's tracker is told; see :func:`carbon_intensity`).
    gpu_index : int, optional
        CUDA ordinal of this process's GPU (``CUDA_VISIBLE_DEVICES`` is honoured).
    n_workers_on_host : int
        Worker processes sharing this machine; machine-wide figures are split by it.

    Raises
    ------
    InputError
        Bad country/region or a bad count/index.

    Examples
    --------
    >>> meter = EnergyMeter(country="FRA")
    >>> with meter.measure("train") as reading:
    ...     pass
    >>> reading.energy_kwh >= 0 and reading.country == "FRA"
    True
    >>> meter.stop()
    """

    def __init__(self, country: str = "USA", region: str | None = None, gpu_index: int | None = None,
                 n_workers_on_host: int = 1) -> None:
        if not (_is_number(n_workers_on_host, int) and n_workers_on_host >= 1):
            raise InputError(f"energy.n_workers_on_host={n_workers_on_host!r} must be an integer ≥ 1")
        if gpu_index is not None and not (_is_number(gpu_index, int) and gpu_index >= 0):
            raise InputError(f"energy.gpu_index={gpu_index!r} must be None or a CUDA ordinal ≥ 0")
        carbon_intensity(country, region)  # refuses a country or region CodeCarbon does not know
        self.country, self.region = country.strip().upper(), region
        self.gpu_index, self.n_workers_on_host = gpu_index, n_workers_on_host
        self._lock = threading.RLock()
        self._tracker: Any = None
        self._gpu: _nvml.GpuEnergyCounter | None = None
        self._gpu_method = "gpu=none"
        self._cpu_split = self._ram_split = 1
        self._cpu_ram_method = ""
        self._active: list[_Window] = []
        self._segment: tuple[str, int | None, tuple[_Window, ...]] | None = None
        self._ids = itertools.count()

    def start(self) -> None:
        """Create the CodeCarbon tracker and probe the hardware (about 1.5 s, once per process)."""
        with self._lock:
            if self._tracker is not None:
                return
            from codecarbon import OfflineEmissionsTracker

            _quiet_codecarbon()
            device = _nvml.nvml_device_id(self.gpu_index)
            tracker = OfflineEmissionsTracker(
                country_iso_code=self.country,
                region=self.region,
                tracking_mode="process",
                log_level="error",
                allow_multiple_runs=True,  # one tracker per worker process, no machine-wide lock file
                output_methods=[],  # = save_to_file=False without its DeprecationWarning: no emissions.csv
                emissions_endpoint=False,  # False, not None: None would let a config file switch it on
                electricitymaps_api_token=False,  # never the web API, even if a config file names a token
                pue=1.0,  # PUE is applied once, by co2_grams
                # Inert: it paces tracker.start()'s whole-run scheduler, which we never run (unused
                # readings, wake-ups on small workers). Task windows sample every 1 s (fixed in 3.3.2).
                measure_power_secs=600,
                gpu_ids=[device] if device is not None else None,
            )
            # The hardware probe (CPU model → TDP table, GPU scan) happens on the first
            # window; pay it here, once per worker, rather than inside the first task.
            tracker.start_task("compressflow-warmup")
            warmup = tracker.stop_task("compressflow-warmup")
            try:
                check_codecarbon_api(tracker, warmup)
            except MeterCompatibilityError:
                tracker.stop()
                raise
            self._tracker = tracker
            _speedups.speed_up(tracker)  # task windows ~20x cheaper (see _speedups)
            self._describe_hardware(tracker)
            if device is not None:
                self._gpu, self._gpu_method = _nvml.open_counter(device)
            elif self.gpu_index is not None:
                self._gpu_method = f"gpu=none(cuda:{self.gpu_index} is not visible: CUDA_VISIBLE_DEVICES)"

    @property
    def measuring(self) -> bool:
        """Whether a :meth:`measure` window is open (a task is being measured)."""
        with self._lock:
            return bool(self._active)

    def stop(self) -> None:
        """Stop the tracker (writes nothing). Windows still open keep what was measured so far."""
        with self._lock:
            self._close_segment()
            tracker, self._tracker = self._tracker, None
        if tracker is not None:
            tracker.stop()

    @contextmanager
    def measure(self, name: str, on_sample: Callable[[float, float, float], None] | None = None
                ) -> Iterator[EnergyReading]:
        """Measure the energy of the ``with`` block; the reading is filled in on exit, also on error.

        Parameters
        ----------
        name : str
            Task label (used for CodeCarbon's task name and in error messages).
        on_sample : callable, optional
            ``on_sample(cpu_kwh, gpu_kwh, ram_kwh)``, called with the window's energy so far
            at each :meth:`energy_so_far` (each epoch), e.g. to log it where a killed task's
            energy survives.

        Yields
        ------
        EnergyReading
        """
        self.start()
        reading = EnergyReading(country=self.country)
        window = _Window(str(name), on_sample)
        with self._lock:
            self._close_segment()
            self._active.append(window)
            self._open_segment()
        t0 = time.perf_counter()
        try:
            yield reading
        finally:
            with self._lock:
                self._close_segment()
                self._active.remove(window)
                self._open_segment()
            self._fill(reading, window, time.perf_counter() - t0)

    def energy_so_far(self) -> float:
        """kWh measured so far in the calling thread's open window (the task running in this
        thread; else the innermost), for per-epoch energy curves: the CodeCarbon segment is
        closed and reopened, so what it measured is added to the window. ``nan`` outside a
        window. Calls the window's ``on_sample``."""
        with self._lock:
            if not self._active or self._tracker is None:
                return _NAN
            self._close_segment()
            self._open_segment()
            me = threading.get_ident()
            w = next((w for w in reversed(self._active) if w.thread == me), self._active[-1])
            cpu, gpu, ram = w.cpu, w.gpu, w.ram
        if w.on_sample is not None and not w.errors:
            try:
                w.on_sample(cpu, gpu, ram)
            except Exception as exc:  # a full disk must not fail the task that is being measured
                log.warning("energy sample of task %r not logged: %s", w.name, exc)
        return cpu + gpu + ram

    # -- segments: one CodeCarbon task at a time, shared by the windows open during it ----------

    def _open_segment(self) -> None:
        if not self._active or self._tracker is None:
            return
        label = f"{self._active[-1].name}#{next(self._ids)}"
        try:
            gpu_mj = self._gpu.read_mj() if self._gpu is not None else None
            self._tracker.start_task(label)
        except Exception as exc:  # a meter failure must not fail the study's task
            for w in self._active:
                w.errors.append(f"start: {_nvml._clean(exc)}")
            return
        self._segment = (label, gpu_mj, tuple(self._active))

    def _close_segment(self) -> None:
        if self._segment is None:
            return
        label, gpu_mj, members = self._segment
        self._segment = None
        try:
            data = self._tracker.stop_task(label)
            # CodeCarbon keeps every finished task for the tracker's lifetime; a worker runs thousands.
            self._tracker._tasks.pop(label, None)
            if data is None:
                raise RuntimeError("CodeCarbon returned no data for the window")
            gpu = self._gpu.kwh_since(gpu_mj) if self._gpu is not None and gpu_mj is not None else 0.0
            cpu = data.cpu_energy / self._cpu_split
            ram = data.ram_energy / self._ram_split
        except Exception as exc:
            for w in members:
                w.errors.append(f"stop: {_nvml._clean(exc)}")
            return
        for w in members:
            w.cpu += cpu / len(members)
            w.gpu += gpu / len(members)
            w.ram += ram / len(members)
            w.shared = max(w.shared, len(members))

    def _fill(self, reading: EnergyReading, window: _Window, duration_s: float) -> None:
        method = f"{self._cpu_ram_method};{self._gpu_method};window=codecarbon-task"
        if window.shared > 1:
            method += f";shared={window.shared}(equal split among concurrent tasks in this process)"
        if window.errors:
            log.warning("energy of task %r not measured: %s", window.name, "; ".join(window.errors))
            method += f";error={' | '.join(window.errors)}"
            window.cpu = window.gpu = window.ram = _NAN
        reading.cpu_kwh, reading.gpu_kwh, reading.ram_kwh = window.cpu, window.gpu, window.ram
        reading.energy_kwh = window.cpu + window.gpu + window.ram
        reading.duration_s = duration_s
        reading.method = method

    def _describe_hardware(self, tracker: Any) -> None:
        # CodeCarbon exposes how it measures only on its hardware objects (private attributes).
        hardware: dict[str, Any] = {type(hw).__name__: hw for hw in tracker._hardware}  # attributes checked by check_codecarbon_api
        cpu, ram, n = hardware["CPU"], hardware["RAM"], self.n_workers_on_host  # present: checked at start
        mode, tdp = cpu._mode, cpu._tdp
        self._cpu_split = self._ram_split = n
        if mode == "cpu_load" and cpu._tracking_mode == "process":
            self._cpu_split = 1  # already this process's own share
            cpu_m = f"cpu=codecarbon:cpu-load(tdp={tdp:g}W x process CPU-time share of {cpu._cpu_count} logical CPUs)"
        elif mode == "constant":
            cpu_m = f"cpu=codecarbon:tdp-constant(50% of tdp={tdp:g}W, whole machine)/n_workers_on_host={n}"
        else:
            cpu_m = f"cpu=codecarbon:{mode}(energy counter, whole machine)/n_workers_on_host={n}"
        forced = ram._force_ram_power
        ram_m = f"forced {forced:g}W" if forced is not None else "DIMM model of process RSS, 10W floor"
        self._cpu_ram_method = f"{cpu_m};ram=codecarbon:ram({ram_m})/n_workers_on_host={n}"
