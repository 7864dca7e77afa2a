"""GPU energy of one device from NVML's total-energy counter (private to ``compressflow.energy``).

NVML keeps, per device, the energy the board has drawn since the driver was loaded
(``nvmlDeviceGetTotalEnergyConsumption``, millijoules, Volta and newer). The difference
of two readings is the device's energy over that interval — a measurement, not a power
model (the driver refreshes the counter periodically, so very short windows may read 0).
``pynvml`` (the ``nvidia-ml-py`` package) is imported lazily so that CPU-only
installs never load it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

MJ_PER_KWH = 3.6e9  # 1 kWh = 3.6e6 J = 3.6e9 mJ

__all__ = ["GpuEnergyCounter", "MJ_PER_KWH", "checked", "mj_to_kwh", "nvml_device_id", "open_counter"]


def mj_to_kwh(mj: float) -> float:
    """Convert millijoules (NVML's energy unit) to kWh."""
    return mj / MJ_PER_KWH


class GpuEnergyCounter:
    """The cumulative energy counter of one GPU.

    Parameters
    ----------
    handle : object
        An NVML device handle.
    label : str
        The NVML index or UUID the handle was opened from (recorded in ``method``).
    read : callable, optional
        ``read(handle) -> int`` millijoules; defaults to
        ``pynvml.nvmlDeviceGetTotalEnergyConsumption``.
    """

    def __init__(self, handle: Any, label: str, read: Callable[[Any], int] | None = None) -> None:
        self.handle = handle
        self.label = label
        self._read = read

    @property
    def method(self) -> str:
        return f"gpu=nvml:total-energy-counter(device {self.label})"

    def read_mj(self) -> int:
        """Millijoules drawn by the device since the driver was loaded."""
        read = self._read
        if read is None:
            import pynvml

            read = pynvml.nvmlDeviceGetTotalEnergyConsumption
        return int(read(self.handle))

    def kwh_since(self, start_mj: int) -> float:
        """kWh drawn since an earlier :meth:`read_mj` value."""
        return mj_to_kwh(self.read_mj() - start_mj)


def nvml_device_id(gpu_index: int | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """The NVML id (index or UUID) of the device this process computes on, or ``None``.

    ``gpu_index`` is the CUDA ordinal inside this process (``cuda:gpu_index``). When
    ``CUDA_VISIBLE_DEVICES`` is set, ordinal ``i`` is its ``i``-th entry (dask-cuda puts the
    worker's own device first, so ``gpu_index=0`` is right there); integer entries are read
    as NVML indices, which holds with ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` — UUID entries are
    exact. Without ``gpu_index`` only a single visible device is unambiguous.
    """
    raw = environ.get("CUDA_VISIBLE_DEVICES")
    visible = None if raw is None else [s.strip() for s in raw.split(",") if s.strip()]
    if visible is not None:
        # CUDA stops at the first invalid entry, e.g. "-1" hides every device
        valid = []
        for entry in visible:
            if entry.lstrip("-").isdigit() and int(entry) < 0:
                break
            valid.append(entry)
        visible = valid
    if gpu_index is None:
        return visible[0] if visible is not None and len(visible) == 1 else None
    if visible is None:
        return str(gpu_index)
    return visible[gpu_index] if gpu_index < len(visible) else None


def checked(counter: GpuEnergyCounter) -> tuple[GpuEnergyCounter | None, str]:
    """Probe one reading; pre-Volta boards and MIG slices have no energy counter."""
    try:
        counter.read_mj()
    except Exception as exc:  # pynvml.NVMLError, or anything a foreign handle raises
        return None, f"gpu=none(NVML energy counter unreadable on device {counter.label}: {_clean(exc)})"
    return counter, counter.method


def open_counter(device: str) -> tuple[GpuEnergyCounter | None, str]:
    """Open the counter of NVML device ``device`` (index or UUID); never raises.

    Returns
    -------
    (counter or None, method)
        ``method`` is ``"gpu=nvml:total-energy-counter(...)"`` or ``"gpu=none(<why>)"``.
    """
    try:
        import pynvml
    except ImportError:
        return None, "gpu=none(pynvml missing: pip install nvidia-ml-py)"
    try:
        pynvml.nvmlInit()  # reference-counted by NVML; CodeCarbon shares the same library state
        if device.isdigit():
            handle = pynvml.nvmlDeviceGetHandleByIndex(int(device))
        else:
            handle = pynvml.nvmlDeviceGetHandleByUUID(device)
    except pynvml.NVMLError as exc:
        return None, f"gpu=none(NVML unavailable: {_clean(exc)}; needs an NVIDIA driver and pip install nvidia-ml-py)"
    return checked(GpuEnergyCounter(handle, device))


def _clean(exc: BaseException) -> str:
    # ';' separates components in EnergyReading.method
    return (str(exc) or type(exc).__name__).replace(";", ",")
