"""Where tasks run: an embedded ``LocalCluster`` (the default), a cluster spec YAML, or the
address of a running scheduler.

The embedded default is tuned for training on CPUs: worker *processes* with one Dask thread
each, torch/OpenMP threads per worker set so that workers × threads ≤ cores (oversubscribed
threads destroyed the blockwise paper's speedup), the statistical profiler off (it samples
every 10 ms and costs a few % per worker on small machines), glibc's default memory
trimming (see ``WORKER_CONFIG``), and scheduler and dashboard bound to 127.0.0.1 only.

It is also secure by default: scheduler, nannies and workers speak TLS (``tls://127.0.0.1``)
with a throw-away certificate made for the run (``Security.temporary()``) and held only in
this process's memory (and its workers', which receive it when they are spawned), so no
other local process can attach to the scheduler and run code in the workers or in this
process. ``security: none`` in the cluster spec opts out (plain TCP, any local process can
attach). The dashboard (read-only status pages) stays plain HTTP on 127.0.0.1.

Its worker processes ignore SIGINT and SIGTERM (:mod:`compressflow.engine.worker_signals`):
Ctrl-C, ``timeout``, systemd and SLURM signal the whole process group, and this process alone
cancels, waits for running tasks to reach an epoch boundary, writes what finished and closes
the cluster; workers whose client process died stop with it. Once closed, they exit without
the seconds of garbage collection that made the nanny kill them
(:mod:`compressflow.engine.worker_exit`).

The tuned Dask settings (``WORKER_CONFIG``) are Dask *defaults* from the moment this module is
imported (``dask.config.update_defaults``): a user's ``~/.config/dask/*.yaml`` or ``DASK_*``
environment variable for the same key wins, as it does over Dask's own defaults.

Every option of a cluster spec is checked before any cluster starts
(:mod:`compressflow.engine.cluster_options`: one table of the options, what each allows, and
its check), and a run whose workers keep dying is stopped with one line instead of waiting
forever (:class:`~compressflow.engine.watchdog.WorkerWatchdog`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dask
from distributed import Client, LocalCluster

from compressflow.engine.cluster_kinds import OPTIONAL_KINDS, SECURITY_CHOICES, make_cluster, security
from compressflow.engine.cluster_options import (ADDRESS_SCHEMES, KINDS, LOCAL_DEFAULTS, MIN_MEMORY_LIMIT, OPTIONS,
                                                 check_options, load_cluster_spec)
from compressflow.engine.main_guard import refuse_reimport, refuse_unguarded_start
from compressflow.engine.watchdog import WATCHDOG, WorkersDyingError, WorkerWatchdog
from compressflow.errors import InputError, SpecError

__all__ = ["ADDRESS_SCHEMES", "KINDS", "LOCAL_DEFAULTS", "MIN_MEMORY_LIMIT", "OPTIONS", "WATCHDOG", "WORKER_CONFIG", "WORKER_PRELOADS",
           "WorkerWatchdog", "WorkersDyingError", "check_options", "connect", "load_cluster_spec", "local_cluster"]

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


def _nested(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"a.b.c": v}`` as ``{"a": {"b": {"c": v}}}``, the shape ``update_defaults`` merges."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = out
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return out


def _install_defaults() -> None:
    """Make ``WORKER_CONFIG`` Dask's defaults; the user's own settings keep winning."""
    # distributed (imported above) has registered its defaults, so update_defaults replaces a
    # value that is still Dask's default and keeps one the user changed in YAML or DASK_*
    dask.config.update_defaults(_nested(WORKER_CONFIG))
    # ... but it cannot tell a user who wrote Dask's default value (profile.enabled: true, to
    # keep the profiler) from no setting at all: such explicit settings are put back
    user = dask.config.collect()  # the YAML files and DASK_* variables only, without defaults
    missing = object()
    for key in WORKER_CONFIG:
        value = dask.config.get(key, missing, config=user)
        if value is not missing:
            dask.config.update(dask.config.config, _nested({key: value}))


_install_defaults()

#: preload modules of the embedded cluster's worker processes (see their docstrings)
WORKER_PRELOADS = ("compressflow.engine.worker_signals", "compressflow.engine.worker_exit")


# ---------------------------------------------------------------------------------------
# Starting or reaching a cluster
# ---------------------------------------------------------------------------------------

def local_cluster(*, security: Any = "temporary", **options: Any) -> LocalCluster:
    """Start the embedded CPU cluster (see module docstring for the defaults).

    Parameters
    ----------
    security : "temporary", "none", mapping or distributed.security.Security
        ``"temporary"`` (also ``None``): TLS on ``tls://`` with a throw-away certificate
        held by this process; ``"none"``: plain TCP, which any local process can attach to;
        a mapping of Dask TLS settings or a ``Security``: TLS with those credentials.
    **options
        ``n_workers``, ``threads_per_worker``, ``torch_threads``, ``host``,
        ``dashboard_address``, ``memory_limit`` (see ``OPTIONS``).

    Raises
    ------
    SpecError
        A bad option (one line).
    InputError
        Called from the top level of a script without the ``__main__`` guard (its worker
        processes would re-import and re-run it; :mod:`compressflow.engine.main_guard`).
    """
    refuse_reimport()
    refuse_unguarded_start()
    opts = {**LOCAL_DEFAULTS, **check_options("local", options)}
    sec = _security_of(security, default="temporary")
    cores = os.cpu_count() or 1
    n_workers = opts.pop("n_workers") or min(cores, 4)
    torch_threads = opts.pop("torch_threads") or max(1, cores // n_workers)
    env = {name: str(torch_threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    comm = {"protocol": "tls://", "security": sec} if sec is not None else {"protocol": "tcp://"}
    # its worker processes leave Ctrl-C and SIGTERM, which reach the whole process group, to this one,
    # and exit within the nanny's 4 s once closed
    return LocalCluster(n_workers=n_workers, processes=True, env=env, preload=list(WORKER_PRELOADS), **comm, **opts)


def _security_of(value: Any, default: Any = None):
    if isinstance(value, bool):  # a YAML `false`/`true` is not an opt-out: say what is
        raise SpecError(f"--cluster: security: {value!r} is not allowed; give {SECURITY_CHOICES}")
    return security(value, default=default)


@contextlib.contextmanager
def connect(cluster: Any = None, *, timeout: float = 10.0) -> Iterator[Client]:
    """A Dask client for ``cluster``, closed (with any cluster it started) on exit.

    A run on a cluster started or reached here is watched (:class:`WorkerWatchdog`): if its
    workers keep dying the client is closed and leaving the ``with`` block raises
    :class:`WorkersDyingError` (finished tasks' records stay on disk).

    Parameters
    ----------
    cluster : None, "local", path, "tcp://host:port", dict or distributed.Client
        ``None``/``"local"``: the embedded default (TLS, see the module docstring); a
        ``.yaml`` path: a cluster spec; an address: an existing scheduler; a dict: a parsed
        cluster spec; a ``Client``: used as is, left open and not watched.
    timeout : float
        Seconds to wait for a remote scheduler (connection and handshake) before giving up;
        an address spec's ``timeout`` overrides it.

    Raises
    ------
    InputError
        Unreachable scheduler or unusable cluster spec (before any cluster starts), or
        :class:`WorkersDyingError` on leaving.
    """
    if isinstance(cluster, Client):
        yield cluster
        return
    spec = _resolve(cluster)
    kind = spec["kind"]
    options = {k: v for k, v in spec.items() if k not in ("kind", "security")}
    with contextlib.ExitStack() as stack:
        if kind == "address":
            sec = _security_of(spec.get("security"))
            client = _attach(spec["address"], float(spec.get("timeout", timeout)), sec)
            stack.callback(client.close)
        elif kind in OPTIONAL_KINDS:
            sec = _security_of(spec.get("security"))
            oc = stack.enter_context(make_cluster(kind, {**options, **({"security": sec} if sec else {})}))
            client = Client(oc, security=sec)
            stack.callback(client.close)
        else:
            lc = stack.enter_context(local_cluster(security=spec.get("security"), **options))
            # closed by callback, not ``with Client``: a submitted study closes it from its own
            # thread, and the client's context manager resets a context variable of the thread
            # that entered it
            client = Client(lc)
            stack.callback(client.close)
        local = kind in ("local", "local-cuda")
        dog = stack.enter_context(WorkerWatchdog(client, no_worker_s=WATCHDOG["no_worker_s"] if local else None))
        try:
            yield client
        except Exception:
            dog.raise_if_tripped()
            raise
        dog.raise_if_tripped()


def _resolve(cluster: Any) -> dict[str, Any]:
    if cluster is None or cluster == "local":
        return {"kind": "local"}
    if isinstance(cluster, dict):
        raw = dict(cluster)
        kind = raw.pop("kind", "local")
        if not isinstance(kind, str):
            raise SpecError(f"--cluster: kind {kind!r} is not supported; valid kinds: {', '.join(KINDS)}")
        return {"kind": kind, **check_options(kind, raw)}  # an unknown kind: one line there, with "did you mean"
    text = str(cluster)
    if "://" in text:
        return {"kind": "address", **check_options("address", {"address": text})}
    if text.endswith((".yaml", ".yml")) or Path(text).exists():
        return load_cluster_spec(text)
    raise InputError(
        f"--cluster: {text!r} is neither a cluster spec file nor a scheduler address; "
        "give e.g. clusters/local.yaml or tcp://127.0.0.1:8786"
    )


def _attach(address: str, timeout: float, sec: Any = None) -> Client:
    try:
        _probe(address, timeout, sec)
        return Client(address, timeout=timeout, security=sec)
    except (OSError, TimeoutError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "TLS certificate does not match" in reason or "SSL" in reason:
            raise InputError(f"--cluster: the scheduler at {address!r} refused our TLS credentials ({reason}); "
                             "give the cluster spec the 'security' entry that cluster uses") from None
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


def _probe(address: str, timeout: float, sec: Any) -> None:
    """Open and close one comm to ``address`` within ``timeout`` seconds in all.

    Dask's ``connect`` retries the TCP connection until its timeout, but then waits for the
    peer's handshake with no limit, so a ``Client`` given the address of a port held by a
    process that is not a responsive Dask scheduler (a stalled one, another service) waited
    forever. The probe bounds the whole exchange; it runs its own event loop in a thread so it
    also works where the caller's thread already runs one (Jupyter)."""
    from distributed.comm import connect as comm_connect
    from distributed.security import Security

    args = (sec or Security()).get_connection_args("client")

    async def once() -> None:
        comm = await asyncio.wait_for(comm_connect(address, timeout=timeout, **args), timeout)
        await comm.close()

    with ThreadPoolExecutor(1, thread_name_prefix="compressflow-probe") as pool:
        try:
            pool.submit(asyncio.run, once()).result()
        except asyncio.TimeoutError:
            raise TimeoutError(f"no Dask handshake from {address} within {timeout:g} s") from None
