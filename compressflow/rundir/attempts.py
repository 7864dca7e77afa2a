"""The attempt log ``OUT/attempts/<key>.log``: one line per start of a task, per energy sample
while it runs (each epoch), and per end, so the energy of an attempt that never ends — its
worker was killed — is still known and counts in the task's total.

Lines (space-separated; a worker name has no spaces)::

    <worker> <time> start <attempt>
    <worker> <time> energy <attempt> <cpu_kwh> <gpu_kwh> <ram_kwh>
    <worker> <time> end <attempt> <status> <cpu_kwh> <gpu_kwh> <ram_kwh>

Energies are cumulative within their attempt. Logs of earlier versions hold only
``<worker> <time>`` start lines (attempts without energy). One short line is appended with one
``write`` to a file opened for appending, so lines of concurrent writers never interleave.
An attempt writes its lines without reading the log, and reads it once, when it ends.

A log is read and written only as a regular file: one that is a FIFO or a link to a device
is refused at once (``compressflow status`` reads logs; a worker appends to them), and a
log is read up to :data:`LOG_LIMIT` bytes."""

from __future__ import annotations

import math
import os
import stat
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from compressflow._regular_files import file_kind, read_regular
from compressflow.errors import FileRefused, printable

__all__ = ["COMPONENTS", "LOG_LIMIT", "Attempt", "AttemptLog", "Attempts", "lost_energy", "parse_attempts",
           "read_attempts"]

COMPONENTS = ("cpu_kwh", "gpu_kwh", "ram_kwh")
#: the most bytes an attempt log may hold (a line is ~100 bytes: 600,000 lines)
LOG_LIMIT = 64 << 20


@dataclass
class Attempt:
    """One execution of a task as its log tells it: the last energy known and how it ended
    (``status`` is ``""`` for an attempt that never ended, e.g. its worker was killed)."""

    worker: str
    cpu_kwh: float = 0.0
    gpu_kwh: float = 0.0
    ram_kwh: float = 0.0
    status: str = ""
    started: float = -math.inf  # POSIX seconds of its start line (-inf: unreadable)

    @property
    def kwh(self) -> float:
        """CPU + GPU + RAM (a component that was not measured adds nothing)."""
        return sum(v for v in (self.cpu_kwh, self.gpu_kwh, self.ram_kwh) if math.isfinite(v))


def parse_attempts(lines: list[str]) -> dict[str, Attempt]:
    """Attempt id → :class:`Attempt`, in start order; unreadable lines are skipped (a log is a
    record of effort, not of results: a torn line must not fail the task)."""
    attempts: dict[str, Attempt] = {}
    for n, line in enumerate(lines):
        parts = line.split()
        if len(parts) == 2:  # an earlier version's start line
            attempts[f"#{n}"] = Attempt(parts[0], started=_time(parts[1]))
            continue
        if len(parts) < 4:
            continue
        worker, kind, aid, rest = parts[0], parts[2], parts[3], parts[4:]
        if kind == "start":
            attempts[aid] = Attempt(worker, started=_time(parts[1]))
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


def _time(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return -math.inf


def read_attempts(path: Path) -> dict[str, Attempt]:
    """Every attempt in the log at ``path`` (none when there is no log).

    Raises
    ------
    FileRefused
        The log is not a regular file, or larger than :data:`LOG_LIMIT`; one line naming it.
    """
    try:
        data = read_regular(path, LOG_LIMIT, what="attempt log")
    except FileNotFoundError:
        return {}
    return parse_attempts(data.decode("utf-8", errors="replace").splitlines())


@dataclass
class Attempts:
    """What the log says of a task once one of its attempts ended: ``workers`` that started
    it (in start order), ``kwh`` of each attempt, and ``lost`` kWh per component of the
    attempts other than this one that did not finish."""

    workers: list[str]
    kwh: list[float]
    lost: dict[str, float]


class AttemptLog:
    """One attempt's lines in a task's attempt log (written through
    :meth:`compressflow.rundir.RunDir.attempt_log`).

    Parameters
    ----------
    path : path
        The task's log, ``OUT/attempts/<key>.log``.
    worker : str
        Who runs this attempt (a worker address).
    """

    def __init__(self, path: Path, worker: str) -> None:
        self.path = Path(path)
        self.worker = worker
        self.id = uuid.uuid4().hex[:12]

    def start(self) -> None:
        """Log this start."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._append(f"start {self.id}")

    def energy(self, cpu_kwh: float, gpu_kwh: float, ram_kwh: float) -> None:
        """Log the energy this attempt has used so far (called per epoch by the meter)."""
        self._append(f"energy {self.id} {cpu_kwh!r} {gpu_kwh!r} {ram_kwh!r}")

    def end(self, status: str, cpu_kwh: float, gpu_kwh: float, ram_kwh: float) -> Attempts:
        """Log how this attempt ended and its whole energy; read the log (once) for what the
        task's record keeps of its attempts."""
        self._append(f"end {self.id} {status} {cpu_kwh!r} {gpu_kwh!r} {ram_kwh!r}")
        attempts = read_attempts(self.path)
        return Attempts([a.worker for a in attempts.values()], [a.kwh for a in attempts.values()],
                        lost_energy(attempts, self.id))

    def _append(self, text: str) -> None:
        # non-blocking: opening a FIFO for writing would wait for a reader (or fails, ENXIO)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            if isinstance(exc, (FileNotFoundError, PermissionError)):
                raise
            mode = os.stat(self.path).st_mode  # a FIFO without a reader: ENXIO
            why = f"is {file_kind(mode)}, not a regular file" if not stat.S_ISREG(mode) else f"cannot be opened ({exc.strerror})"
            raise FileRefused(f"attempt log {printable(self.path)} {why}") from None
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise FileRefused(f"attempt log {printable(self.path)} is {file_kind(mode)}, not a regular file")
            os.write(fd, f"{self.worker} {time.time():.3f} {text}\n".encode())
        finally:
            os.close(fd)
