"""The attempt log ``OUT/attempts/<key>.log``: one line per start of a task, per energy sample
while it runs (each epoch), and per end, so the energy of an attempt that never ends — its
worker was killed — is still known and counts in the task's total.

Lines (space-separated; a worker name has no spaces)::

    <worker> <time> start <attempt>
    <worker> <time> energy <attempt> <cpu_kwh> <gpu_kwh> <ram_kwh>
    <worker> <time> end <attempt> <status> <cpu_kwh> <gpu_kwh> <ram_kwh>

Energies are cumulative within their attempt. Logs of earlier versions hold only
``<worker> <time>`` start lines (attempts without energy). One short line is appended with one
``write`` to a file opened for appending, so lines of concurrent writers never interleave."""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from compressflow.engine.rundir import RunDir

__all__ = ["Attempt", "AttemptLog", "lost_energy", "parse_attempts"]

COMPONENTS = ("cpu_kwh", "gpu_kwh", "ram_kwh")


@dataclass
class Attempt:
    """One execution of a task as its log tells it: the last energy known and how it ended
    (``status`` is ``""`` for an attempt that never ended, e.g. its worker was killed)."""

    worker: str
    cpu_kwh: float = 0.0
    gpu_kwh: float = 0.0
    ram_kwh: float = 0.0
    status: str = ""


def parse_attempts(lines: list[str]) -> dict[str, Attempt]:
    """Attempt id → :class:`Attempt`, in start order; unreadable lines are skipped (a log is a
    record of effort, not of results: a torn line must not fail the task)."""
    attempts: dict[str, Attempt] = {}
    for n, line in enumerate(lines):
        parts = line.split()
        if len(parts) == 2:  # an earlier version's start line
            attempts[f"#{n}"] = Attempt(parts[0])
            continue
        if len(parts) < 4:
            continue
        worker, kind, aid, rest = parts[0], parts[2], parts[3], parts[4:]
        if kind == "start":
            attempts[aid] = Attempt(worker)
        elif aid in attempts and kind in ("energy", "end"):
            att = attempts[aid]
            if kind == "end" and rest:
                att.status, rest = rest[0], rest[1:]
            try:
                values = [float(v) for v in rest[:3]]
            except ValueError:
                continue
            if len(values) == 3:
                att.cpu_kwh, att.gpu_kwh, att.ram_kwh = values
    return attempts


def lost_energy(attempts: dict[str, Attempt], current: str) -> dict[str, float]:
    """kWh per component (``cpu_kwh``, ``gpu_kwh``, ``ram_kwh``) of every attempt other than
    ``current`` that did not end ``ok``: killed (its last sample) or failed (its end reading).
    A component that was not measured (NaN) adds nothing."""
    lost = dict.fromkeys(COMPONENTS, 0.0)
    for aid, att in attempts.items():
        if aid == current or att.status == "ok":
            continue
        for name in COMPONENTS:
            value = getattr(att, name)
            if math.isfinite(value):
                lost[name] += value
    return lost


class AttemptLog:
    """This execution's view of the task's attempt log.

    Parameters
    ----------
    run : RunDir or path
        The run directory.
    key : str
        The task's key.
    worker : str
        Who runs this attempt (a worker address).
    """

    def __init__(self, run: RunDir | Path | str, key: str, worker: str) -> None:
        self.path = (run if isinstance(run, RunDir) else RunDir(run)).attempt_log(key)
        self.worker = worker
        self.id = uuid.uuid4().hex[:12]

    def start(self) -> list[str]:
        """Log this start; return every worker that started the task so far, this one last."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._append(f"start {self.id}")
        return [a.worker for a in self.attempts().values()]

    def energy(self, cpu_kwh: float, gpu_kwh: float, ram_kwh: float) -> None:
        """Log the energy this attempt has used so far (called per epoch by the meter)."""
        self._append(f"energy {self.id} {cpu_kwh!r} {gpu_kwh!r} {ram_kwh!r}")

    def end(self, status: str, cpu_kwh: float, gpu_kwh: float, ram_kwh: float) -> None:
        """Log how this attempt ended and its whole energy."""
        self._append(f"end {self.id} {status} {cpu_kwh!r} {gpu_kwh!r} {ram_kwh!r}")

    def attempts(self) -> dict[str, Attempt]:
        """Every attempt of the task so far (see :func:`parse_attempts`)."""
        return parse_attempts(self.path.read_text(encoding="utf-8").splitlines())

    def kwh(self) -> list[float]:
        """Energy (kWh, CPU + GPU + RAM; unmeasured components add nothing) of every attempt
        so far, in start order: a killed one's last sample, a finished one's end reading."""
        return [sum(v for v in (a.cpu_kwh, a.gpu_kwh, a.ram_kwh) if math.isfinite(v)) for a in self.attempts().values()]

    def lost(self) -> dict[str, float]:
        """kWh per component of the task's attempts that did not finish (this one excluded)."""
        return lost_energy(self.attempts(), self.id)

    def _append(self, text: str) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(f"{self.worker} {time.time():.3f} {text}\n")
