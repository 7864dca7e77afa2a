"""What produced a run: library versions, the working directory's git commit, and the
machines (host, CPU model, GPU models) of the client and of every worker — kept in the results
tree's root attrs so a number can be traced to the code and hardware that measured it."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["LIBRARIES", "git_commit", "machine", "provenance"]

#: the distributions whose versions a run records (``""`` where one is not installed)
LIBRARIES = ("compressflow", "torch", "dask", "distributed", "codecarbon", "xarray", "zarr", "numpy")


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


def git_commit(folder: Path | str | None = None) -> str:
    """The commit checked out in ``folder`` (default: the working directory), with ``+dirty``
    when tracked files have changes; ``""`` outside a git work tree or without git.

    Examples
    --------
    >>> git_commit("/") in ("", git_commit("/"))  # outside a work tree: ""
    True
    """
    cwd = os.fspath(folder) if folder is not None else None
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return ""
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    return head.stdout.strip() + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu_models() -> list[str]:
    """The NVIDIA GPUs this process can see, by name (NVML; none without a driver)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no nvidia-ml-py, no driver, no GPU: nothing to name
        return []
    try:
        names = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
            names.append(name.decode() if isinstance(name, bytes) else str(name))
        return names
    except Exception:
        return []
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def machine() -> dict[str, Any]:
    """This process's host name, CPU model, logical CPU count and visible GPU models (run on
    the client, and on every worker through ``client.run``)."""
    return {"host": socket.gethostname(), "cpu": _cpu_model(), "cpus": os.cpu_count() or 0, "gpus": _gpu_models()}


def provenance(workers: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, str]:
    """Root attrs of a results tree: ``versions`` (JSON: distribution → version), ``git_commit``,
    ``client`` (JSON :func:`machine`) and ``workers`` (JSON: worker address → :func:`machine`).

    Examples
    --------
    >>> attrs = provenance({"tcp://10.0.0.2:4000": {"host": "n2", "cpu": "x", "cpus": 8, "gpus": []}})
    >>> sorted(attrs)
    ['client', 'git_commit', 'versions', 'workers']
    >>> json.loads(attrs["workers"])["tcp://10.0.0.2:4000"]["host"]
    'n2'
    """
    return {
        "versions": json.dumps({dist: _version(dist) for dist in LIBRARIES}),
        "git_commit": git_commit(),
        "client": json.dumps(machine()),
        "workers": json.dumps({str(k): dict(v) for k, v in sorted((workers or {}).items())}),
    }
