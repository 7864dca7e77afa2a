"""Interrupting a real ``compressflow run`` process with a signal, as a user (Ctrl-C: SIGINT) or
a batch system (SLURM, systemd, ``timeout``: SIGTERM) does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml


def interrupt_run(spec: dict, folder: Path, sig: signal.Signals, *, records: int = 1,
                  args: tuple[str, ...] = (), group: bool = False) -> tuple[subprocess.CompletedProcess, Path]:
    """Run ``python -m compressflow run`` on ``spec`` into ``folder/run``, send it ``sig`` once
    ``records`` task records exist (within 120 s), and wait (at most 120 s) for it to exit.
    ``group``: run it in a process group of its own and signal the whole group, as a terminal's
    Ctrl-C, ``timeout``, systemd and SLURM do (an embedded cluster's workers get it too).
    Returns the finished process (text output) and the run directory."""
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = folder / "run"
    proc = subprocess.Popen([sys.executable, "-m", "compressflow", "run", str(path), "--out", str(out), "--quiet",
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=group)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(list(out.glob("records/*.json"))) < records and proc.poll() is None:
            time.sleep(0.05)
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), out
