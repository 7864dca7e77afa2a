"""A real one-node SLURM for the tests: munged, slurmctld and slurmd started from Debian's
``slurm-wlm`` and ``munge`` packages with a throw-away key, config, state and spool under a
temporary directory, and torn down afterwards.

The config is the smallest one that runs batch jobs in a container: no cgroups
(``proctrack/linuxproc``, ``task/none``), no accounting database, no MPI, free ports for
slurmctld and slurmd so it never meets a SLURM already on the machine, and the node's
resources taken from the config (``SlurmdParameters=config_overrides``) so it is idle on a
machine with fewer cores. Client commands (``sbatch``, ``squeue``, ``scancel``, ``sinfo``)
find it through ``SLURM_CONF``, which the fixture sets for the session.

Use it with ``from tests.e2e.slurm_fixture import slurm`` in a test module of this folder (a
``conftest.py`` here would shadow ``tests/conftest.py``, which tests import as ``conftest``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

__all__ = ["LocalSlurm", "slurm"]

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalSlurm:
    """One-node SLURM under ``root`` (a directory): :meth:`start`, :meth:`stop`, ``env``
    (the environment client commands need), ``partition`` and :meth:`jobs_allocated` (job ids
    slurmctld has started, from its log: accounting is off, so ``sacct`` knows nothing)."""

    partition = "debug"

    def __init__(self, root: Path, cpus: int = 2, memory_mb: int = 4000) -> None:
        self.root = Path(root)
        self.node = socket.gethostname().split(".")[0]
        self.cpus, self.memory_mb = cpus, memory_mb
        self.conf = self.root / "slurm.conf"
        self.procs: list[subprocess.Popen] = []
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    # -- daemons ---------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> None:
        munge = self.root / "munge"
        for sub in ("munge", "munge-key", "state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # munged wants its key readable by root alone and its socket's folder open to all
        # (execute) but writable by root alone
        for path, mode in ((self.root, 0o755), (munge, 0o755), (self.root / "munge-key", 0o700)):
            path.chmod(mode)
        key = self.root / "munge-key" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.socket = munge / "munge.socket"
        self._spawn("munged", ["munged", "-F", f"--key-file={key}", f"--socket={self.socket}",
                               f"--pid-file={munge / 'munged.pid'}", f"--log-file={munge / 'munged.log'}",
                               f"--seed-file={munge / 'munged.seed'}"])
        self._wait(lambda: self.socket.exists(), timeout, "munged did not create its socket", "munge/munged.log")
        self.conf.write_text(self._config(), encoding="utf-8")
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
        self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf), "-N", self.node])
        self._wait(self._idle, timeout, "the node did not become idle", "log/slurmctld.log", "log/slurmd.log")

    def stop(self) -> None:
        if self.conf.exists() and all(p.poll() is None for p in self.procs):
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.run("scancel", "--full", "--user", "root", check=False)
        for proc in reversed(self.procs):  # slurmd, slurmctld, then munged
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
        self.procs.clear()

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.out", "ab")  # noqa: SIM115 (kept open for the daemon)
        self.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env))
        log.close()

    def _wait(self, ready, timeout: float, what: str, *logs: str) -> None:
        deadline = time.monotonic() + timeout
        dead: list[str] = []
        while time.monotonic() < deadline:
            if ready():
                return
            dead = [p.args[0] for p in self.procs if p.poll() is not None]
            if dead:
                break
            time.sleep(0.3)
        logs += tuple(f"log/{p.args[0]}.out" for p in self.procs)
        tails = "\n".join(f"--- {name}\n{self._tail(name)}" for name in logs)
        self.stop()
        raise RuntimeError(f"local SLURM: {what} (exited: {dead or 'none'})\n{tails}")

    def _tail(self, name: str, lines: int = 15) -> str:
        path = self.root / name
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"

    def _idle(self) -> bool:
        out = self.run("sinfo", "-h", "-N", "-o", "%t", check=False).stdout.split()
        return out == ["idle"]

    def _config(self) -> str:
        r = self.root
        return f"""\
ClusterName=cftest
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.socket}
CredType=cred/munge
StateSaveLocation={r / 'state'}
SlurmdSpoolDir={r / 'spool'}
SlurmctldPidFile={r / 'slurmctld.pid'}
SlurmdPidFile={r / 'slurmd.pid'}
SlurmctldLogFile={r / 'log' / 'slurmctld.log'}
SlurmdLogFile={r / 'log' / 'slurmd.log'}
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
PlugStackConfig=/dev/null
# a job past its walltime is killed at once (the default grace is 30 s)
KillWait=5
OverTimeLimit=0
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN
PartitionName={self.partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""

    # -- clients ---------------------------------------------------------------------------
    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), env=self.env, capture_output=True, text=True, timeout=30, check=check)

    def jobs_allocated(self) -> list[int]:
        """Ids of the jobs slurmctld has allocated a node to so far."""
        log = self.root / "log" / "slurmctld.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return [int(line.split("JobId=")[1].split()[0]) for line in text.splitlines()
                if "sched: Allocate JobId=" in line or "backfill: Started JobId=" in line]


def _skip_reason() -> str | None:
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return f"no SLURM here ({', '.join(missing)} not found): apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "the local SLURM runs its daemons as root (SlurmUser=root); run the tests as root"
    return None


@pytest.fixture(scope="session")
def slurm():
    """A running one-node SLURM (:class:`LocalSlurm`); ``SLURM_CONF`` points at it for the
    session. Skipped when the packages are missing or the tests do not run as root."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="cf-slurm-"))
    cluster = LocalSlurm(root, memory_mb=min(8000, int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8)))
    cluster.start()
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        cluster.stop()
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        shutil.rmtree(root, ignore_errors=True)
