"""Where tasks run: an embedded ``LocalCluster`` (the default), a cluster spec YAML, or the
address of a running scheduler.

The embedded default is tuned for training on CPUs: worker *processes* with one Dask thread
each, torch/OpenMP threads per worker set so that workers × threads ≤ cores (oversubscribed
threads destroyed the blockwise paper's speedup), the statistical profiler off (it samples
every 10 ms and costs a few % per worker on small machines), glibc's default memory
trimming (see ``WORKER_CONFIG``), and scheduler and dashboard bound to 127.0.0.1 only."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import yaml
from distributed import Client, LocalCluster

from compressflow.cluster_kinds import OPTIONAL_KINDS, make_cluster, security
from compressflow.errors import InputError, SpecError

__all__ = ["LOCAL_DEFAULTS", "connect", "load_cluster_spec", "local_cluster"]

KINDS = ("local", "address", *OPTIONAL_KINDS)

LOCAL_DEFAULTS: dict[str, Any] = {
    "n_workers": None,  # None: min(cores, 4)
    "threads_per_worker": 1,
    "torch_threads": None,  # None: cores // n_workers
    "host": "127.0.0.1",
    "dashboard_address": "127.0.0.1:8787",
    "memory_limit": "auto",
}

#: Dask settings for compute-bound workers (see module docstring). Dask's nannies export
#: MALLOC_TRIM_THRESHOLD_=65536 to fight fragmentation; with it glibc returns freed tensor
#: memory to the OS after every batch and training ran 1.7x slower here (9.3 s vs 5.4 s for
#: the same 5 epochs, most of it page-fault system time), so we leave glibc's default.
#: With one thread per worker, Dask's default worker-saturation (1.1) hands a busy worker a
#: second long task to queue, which then cannot move to a worker that frees up; 1.0 keeps
#: tasks on the scheduler until a thread is free (work stealing on the scheduling
#: simulation: ≤ 1.08× the lower bound instead of up to 1.12×, benchmarks/scheduling_sim.py).
WORKER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    "distributed.scheduler.worker-saturation": 1.0,
}


def load_cluster_spec(path: str | os.PathLike) -> dict[str, Any]:
    """Read a cluster spec YAML: ``kind`` (``local`` or ``address``) plus its options.

    Raises
    ------
    SpecError
        Unreadable file, not a mapping, unknown kind or unknown option (one line).
    """
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise SpecError(f"--cluster: cannot read cluster spec {str(path)!r}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"--cluster: {str(path)!r} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"--cluster: {str(path)!r} must be a mapping with a 'kind' key (one of {', '.join(KINDS)})")
    raw = dict(raw)
    kind = raw.pop("kind", "local")
    if kind not in KINDS:
        raise SpecError(f"--cluster: kind {kind!r} in {str(path)!r} is not supported; valid kinds: {', '.join(KINDS)}")
    if kind == "address":
        if set(raw) - {"address", "timeout", "security"} or "address" not in raw:
            raise SpecError(f"--cluster: an 'address' cluster spec takes 'address' (required), 'timeout' and "
                            f"'security'; got {sorted(raw)}")
        return {"kind": kind, **raw}
    if kind in OPTIONAL_KINDS:  # options go to dask-cuda / dask-jobqueue, which check them
        return {"kind": kind, **raw}
    unknown = sorted(set(raw) - set(LOCAL_DEFAULTS) - {"security"})
    if unknown:
        raise SpecError(f"--cluster: unknown option {unknown[0]!r} for a local cluster; valid: {', '.join(LOCAL_DEFAULTS)}")
    return {"kind": kind, **raw}


def local_cluster(**options: Any) -> LocalCluster:
    """Start the embedded CPU cluster (see module docstring for the defaults)."""
    opts = {**LOCAL_DEFAULTS, **options}
    cores = os.cpu_count() or 1
    n_workers = int(opts.pop("n_workers") or min(cores, 4))
    torch_threads = int(opts.pop("torch_threads") or max(1, cores // n_workers))
    env = {name: str(torch_threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    with dask.config.set(WORKER_CONFIG):
        return LocalCluster(n_workers=n_workers, processes=True, env=env, **opts)


@contextlib.contextmanager
def connect(cluster: Any = None, *, timeout: float = 10.0) -> Iterator[Client]:
    """A Dask client for ``cluster``, closed (with any cluster it started) on exit.

    Parameters
    ----------
    cluster : None, "local", path, "tcp://host:port", dict or distributed.Client
        ``None``/``"local"``: the embedded default; a ``.yaml`` path: a cluster spec; an
        address: an existing scheduler; a dict: a parsed cluster spec; a ``Client``: used as
        is and left open.
    timeout : float
        Seconds to wait for a remote scheduler before giving up.

    Raises
    ------
    InputError
        Unreachable scheduler or unusable cluster spec.
    """
    if isinstance(cluster, Client):
        yield cluster
        return
    spec = _resolve(cluster)
    options = {k: v for k, v in spec.items() if k not in ("kind", "security")}
    sec = security(spec.get("security"))
    if spec["kind"] == "address":
        client = _attach(spec["address"], float(spec.get("timeout", timeout)), sec)
        try:
            yield client
        finally:
            client.close()
        return
    if spec["kind"] in OPTIONAL_KINDS:
        with make_cluster(spec["kind"], {**options, **({"security": sec} if sec else {})}) as oc, \
                Client(oc, security=sec) as client:
            yield client
        return
    if sec is not None:
        options.update(security=sec, protocol="tls://")
    with local_cluster(**options) as lc, Client(lc, security=sec) as client:
        yield client


def _resolve(cluster: Any) -> dict[str, Any]:
    if cluster is None or cluster == "local":
        return {"kind": "local"}
    if isinstance(cluster, dict):
        return {"kind": "local", **cluster}
    text = str(cluster)
    if "://" in text:
        return {"kind": "address", "address": text}
    if text.endswith((".yaml", ".yml")) or Path(text).exists():
        return load_cluster_spec(text)
    raise InputError(
        f"--cluster: {text!r} is neither a cluster spec file nor a scheduler address; "
        "give e.g. clusters/local.yaml or tcp://127.0.0.1:8786"
    )


def _attach(address: str, timeout: float, sec: Any = None) -> Client:
    try:
        return Client(address, timeout=timeout, security=sec)
    except (OSError, TimeoutError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(
            f"--cluster: cannot reach a Dask scheduler at {address!r} within {timeout:g} s ({reason}); "
            "start one with `dask scheduler` and `dask worker ADDRESS`, or check the address"
        ) from None
    except ValueError as exc:
        raise InputError(f"--cluster: {address!r} is not a valid scheduler address ({exc})") from None
    except TypeError as exc:
        if "TLS" not in str(exc):
            raise
        raise InputError(f"--cluster: the scheduler at {address!r} speaks TLS; give the cluster spec a 'security' "
                         f"entry with its certificates (tls_ca_file, tls_client_cert, tls_client_key)") from None
