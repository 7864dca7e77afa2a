"""Op contexts for the op tests: one that records its progress events and carries a stand-in
energy meter, to check what ops report per epoch without a Dask worker or CodeCarbon."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from compressflow.ops import OpContext


class CountingMeter:
    """Stands in for the worker's :class:`~compressflow.energy.EnergyMeter`: every read of
    ``energy_so_far`` returns 1 mWh more than the one before (a cumulative, rising reading)."""

    def __init__(self) -> None:
        self.reads = 0

    def energy_so_far(self) -> float:
        self.reads += 1
        return 1e-6 * self.reads  # kWh


@dataclass
class RecordingContext(OpContext):
    """An :class:`OpContext` that also keeps every progress event it reports."""

    events: list[dict[str, Any]] = field(default_factory=list)

    def progress(self, **values: Any) -> None:
        self.events.append(values)
        super().progress(**values)


@pytest.fixture
def metered_context():
    """``make(key, stage, data, out)`` → a :class:`RecordingContext` with a :class:`CountingMeter`."""

    def make(key: str, stage: str, data: dict, out) -> RecordingContext:
        return RecordingContext(key, stage, data, out, meter=CountingMeter())

    return make
