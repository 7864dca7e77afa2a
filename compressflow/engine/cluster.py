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

Every option of a cluster spec is checked here, before any cluster starts (``OPTIONS``: one
table of the options, what each allows, and its check), and a run whose workers keep dying is
stopped with one line instead of waiting forever (:class:`WorkerWatchdog`)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import math
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
from dask.utils import format_bytes, parse_bytes
from distributed import Client, LocalCluster

from compressflow.engine._yaml import read_yaml
from compressflow.engine.cluster_kinds import OPTIONAL_KINDS, SECURITY_CHOICES, make_cluster, security
from compressflow.errors import InputError, SpecError

__all__ = ["LOCAL_DEFAULTS", "MIN_MEMORY_LIMIT", "OPTIONS", "WATCHDOG", "WorkerWatchdog", "WorkersDyingError",
           "check_options", "connect", "load_cluster_spec", "local_cluster"]

KINDS = ("local", "address", *OPTIONAL_KINDS)

LOCAL_DEFAULTS: dict[str, Any] = {
    "n_workers": None,  # None: min(cores, 4)
    "threads_per_worker": 1,
    "torch_threads": None,  # None: cores // n_workers
    "host": "127.0.0.1",
    "dashboard_address": "127.0.0.1:8787",
    "memory_limit": "auto",
}

#: The least memory a worker may be given: a worker process that has imported torch,
#: torchvision and CodeCarbon holds ~400 MiB before its first task, and Dask's nanny restarts
#: a worker above 95 % of its limit, so a smaller limit restarts it forever without a task run.
MIN_MEMORY_LIMIT = 512 * 2**20

#: Dask's comm schemes that reach a scheduler on another process or machine.
ADDRESS_SCHEMES = ("tcp", "tls", "ucx", "ws", "wss")

#: When a run stops because its workers keep dying (see :class:`WorkerWatchdog`): more than
#: ``deaths`` unexpected worker deaths (or as many as the most workers seen, if more) within
#: ``window_s`` seconds, or, on a cluster this process started on this machine, no worker
#: alive for ``no_worker_s`` seconds (a worker that dies while it starts, e.g. above its
#: memory limit, is restarted by its nanny forever without the scheduler ever seeing it).
WATCHDOG: dict[str, float] = {"deaths": 10, "window_s": 120.0, "no_worker_s": 60.0}

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


# ---------------------------------------------------------------------------------------
# Options: one table of what a cluster spec may say, each with its check
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Option:
    """A cluster-spec option: ``check(value)`` returns the value to use or raises ValueError;
    ``allowed`` says what is valid, for the error message."""

    check: Callable[[Any], Any]
    allowed: str


def _whole(low: int, high: int, null: bool = False) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        if v is None and null:
            return None
        # bool is an int in Python and a float like 1.5 or .inf would be truncated: refuse both
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            raise ValueError
        return v

    return check


def _seconds(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 < v <= 86400:
        raise ValueError
    return float(v)


def _host(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(v))
    if not re.fullmatch(r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
                        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*", v):
        raise ValueError
    try:
        socket.getaddrinfo(v, None)
    except (OSError, UnicodeError):
        raise ValueError from None
    return v


def _port(text: str, low: int) -> int:
    if not re.fullmatch(r"\d{1,5}", text) or not low <= int(text) <= 65535:
        raise ValueError
    return int(text)


def _split_host_port(text: str) -> tuple[str, str]:
    m = re.fullmatch(r"\[(?P<v6>[0-9A-Fa-f:.]+)\]:(?P<p>[^:]*)|(?P<h>[^:\[\]]*):(?P<q>[^:]*)", text)
    if not m:
        raise ValueError
    return (m["v6"], m["p"]) if m["v6"] is not None else (m["h"], m["q"])


def _dashboard(v: Any) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str):
        raise ValueError
    host, port = _split_host_port(v)
    if host:
        _host(host)
    _port(port, 0)
    return v


def _memory(v: Any) -> str | int:
    if v == "auto":
        return v
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise ValueError
    try:
        size = parse_bytes(v) if isinstance(v, str) else v
    except ValueError:
        raise ValueError from None
    if size < MIN_MEMORY_LIMIT:
        raise ValueError
    return v


def _address(v: Any) -> str:
    if not isinstance(v, str) or "://" not in v:
        raise ValueError
    scheme, rest = v.split("://", 1)
    if scheme not in ADDRESS_SCHEMES:
        raise ValueError
    host, port = _split_host_port(rest)
    if not host or not re.fullmatch(r"[A-Za-z0-9.\-:]+", host):
        raise ValueError
    _port(port, 1)
    return v


def _security(v: Any) -> Any:
    return v  # checked (and built) by cluster_kinds.security, which names the bad setting itself


_COUNT = "a whole number from {} to {}"
OPTIONS: dict[str, Option] = {
    "n_workers": Option(_whole(1, 1024, null=True), _COUNT.format(1, 1024) + ", or null for min(cores, 4)"),
    "threads_per_worker": Option(_whole(1, 1024), _COUNT.format(1, 1024)),
    "torch_threads": Option(_whole(1, 1024, null=True), _COUNT.format(1, 1024) + ", or null for cores // n_workers"),
    "host": Option(_host, "an IP address or host name of this machine, e.g. 127.0.0.1"),
    "dashboard_address": Option(_dashboard, "'HOST:PORT' or ':PORT' with PORT from 0 (any free port) to 65535, "
                                            "or null for no dashboard"),
    "memory_limit": Option(_memory, f"'auto' or a size per worker of at least {format_bytes(MIN_MEMORY_LIMIT)} "
                                    f"(what a torch worker needs), e.g. 4GiB"),
    "security": Option(_security, SECURITY_CHOICES),
    "address": Option(_address, f"SCHEME://HOST:PORT with SCHEME one of {', '.join(ADDRESS_SCHEMES)} and PORT "
                                f"from 1 to 65535, e.g. tcp://127.0.0.1:8786"),
    "timeout": Option(_seconds, "a number of seconds above 0 (at most 86400), e.g. 10"),
    "jobs": Option(_whole(1, 10000), _COUNT.format(1, 10000)),
    "gpus_per_job": Option(_whole(0, 64), _COUNT.format(0, 64)),
}

#: The options each kind takes; the optional kinds pass any other key on to their library.
_KIND_OPTIONS = {
    "local": (*LOCAL_DEFAULTS, "security"),
    "address": ("address", "timeout", "security"),
    "local-cuda": (*LOCAL_DEFAULTS, "security"),
    "slurm": ("jobs", "gpus_per_job", "security"),
}


def check_options(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """Check a cluster spec's options against ``OPTIONS``; return them as the cluster takes them.

    Raises
    ------
    SpecError
        One line naming the option, quoting the bad value and saying what is allowed.
    """
    if kind not in KINDS:
        raise SpecError(f"--cluster: kind {kind!r} is not supported; valid kinds: {', '.join(KINDS)}")
    known = _KIND_OPTIONS[kind]
    if kind in ("local", "address"):
        unknown = sorted(set(options) - set(known), key=str)
        if unknown:
            raise SpecError(f"--cluster: unknown option {unknown[0]!r} for a{'n' if kind == 'address' else ''} "
                            f"{kind} cluster; valid: {', '.join(known)}")
    if kind == "address" and "address" not in options:
        raise SpecError("--cluster: an 'address' cluster spec needs 'address' (e.g. tcp://127.0.0.1:8786); "
                        "it also takes 'timeout' and 'security'")
    checked = dict(options)
    for name, value in options.items():
        option = OPTIONS.get(name) if name in known else None
        if option is None:
            continue
        try:
            checked[name] = option.check(value)
        except ValueError:
            raise SpecError(f"--cluster: {name}: {value!r} is not allowed; give {option.allowed}") from None
    return checked


# ---------------------------------------------------------------------------------------
# Reading a cluster spec file
# ---------------------------------------------------------------------------------------

def load_cluster_spec(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a cluster spec YAML: ``kind`` (``local`` by default, ``address``,
    ``local-cuda`` or ``slurm``) plus its options (see ``OPTIONS``).

    Raises
    ------
    SpecError
        Unreadable, not UTF-8, not valid or unbounded YAML (duplicate keys, deep nesting and
        alias expansion included; see :func:`compressflow.engine._yaml.read_yaml`), not a mapping,
        unknown kind, unknown option or bad value (one line).
    """
    where = repr(str(path))
    raw = read_yaml(path, field="--cluster", what="a cluster spec")
    if not isinstance(raw, dict):
        raise SpecError(f"--cluster: {where} must be a mapping with a 'kind' key (one of {', '.join(KINDS)}), "
                        f"got {type(raw).__name__}")
    raw = dict(raw)
    kind = raw.pop("kind", "local")
    if not isinstance(kind, str) or kind not in KINDS:
        raise SpecError(f"--cluster: kind {kind!r} in {where} is not supported; valid kinds: {', '.join(KINDS)}")
    return {"kind": kind, **check_options(kind, raw)}


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
    """
    opts = {**LOCAL_DEFAULTS, **check_options("local", options)}
    sec = _security_of(security, default="temporary")
    cores = os.cpu_count() or 1
    n_workers = opts.pop("n_workers") or min(cores, 4)
    torch_threads = opts.pop("torch_threads") or max(1, cores // n_workers)
    env = {name: str(torch_threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    comm = {"protocol": "tls://", "security": sec} if sec is not None else {"protocol": "tcp://"}
    with dask.config.set(WORKER_CONFIG):
        return LocalCluster(n_workers=n_workers, processes=True, env=env, **comm, **opts)


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
            client = stack.enter_context(Client(oc, security=sec))
        else:
            lc = stack.enter_context(local_cluster(security=spec.get("security"), **options))
            client = stack.enter_context(Client(lc))
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
        if not isinstance(kind, str) or kind not in KINDS:
            raise SpecError(f"--cluster: kind {kind!r} is not supported; valid kinds: {', '.join(KINDS)}")
        return {"kind": kind, **check_options(kind, raw)}
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


# ---------------------------------------------------------------------------------------
# Stopping a run whose workers keep dying
# ---------------------------------------------------------------------------------------

class WorkersDyingError(InputError):
    """The cluster's workers keep dying (e.g. a memory limit below what a worker needs)."""


class WorkerWatchdog:
    """Watch a client's workers; when they keep dying, close the client so the run stops.

    Dask retries a task whose worker died and marks it ``KilledWorker`` after
    ``distributed.scheduler.allowed-failures`` deaths, but a worker that dies *before* it
    runs a task (killed at start above its memory limit, a crashing plugin) is restarted by
    its nanny forever and the run waits forever. The watchdog follows the scheduler's
    ``add-worker``/``remove-worker`` events and trips on more than ``deaths`` unexpected
    deaths in ``window_s`` seconds (or as many as the most workers seen, if more), or on no
    worker alive for ``no_worker_s`` seconds (``None``: never, for clusters whose workers may
    legitimately come later, such as queued batch jobs or an existing scheduler).

    Parameters
    ----------
    client : distributed.Client
    deaths, window_s, no_worker_s : float, optional
        Thresholds; default ``WATCHDOG``.
    poll_s : float
        How often the thresholds are checked.
    """

    def __init__(self, client: Client, *, deaths: float | None = None, window_s: float | None = None,
                 no_worker_s: float | None = None, poll_s: float = 0.5):
        self._client = client
        self._deaths = WATCHDOG["deaths"] if deaths is None else deaths
        self._window = WATCHDOG["window_s"] if window_s is None else window_s
        self._no_worker = no_worker_s
        self._poll = poll_s
        self._lock = threading.Lock()
        self._alive: set[str] = set()
        self._peak = 0
        self._died: collections.deque[float] = collections.deque()
        self._empty_since: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="compressflow-watchdog", daemon=True)
        self.reason: str | None = None

    def __enter__(self) -> WorkerWatchdog:
        self._client.subscribe_topic("all", self._on_event)
        with self._lock:
            self._alive = set(self._client.scheduler_info(n_workers=-1)["workers"])
            self._peak = len(self._alive)
            self._empty_since = None if self._alive else time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(Exception):  # the client may be closed (tripped) or closing
            if self._client.status == "running":
                self._client.unsubscribe_topic("all")

    def _on_event(self, event: tuple[float, dict]) -> None:
        _, msg = event
        action, worker = msg.get("action"), msg.get("worker")
        if worker is None or action not in ("add-worker", "remove-worker"):
            return
        now = time.monotonic()
        with self._lock:
            if action == "add-worker":
                self._alive.add(worker)
                self._peak = max(self._peak, len(self._alive))
                self._empty_since = None
                return
            self._alive.discard(worker)
            if not msg.get("expected"):
                self._died.append(now)
            if not self._alive and self._empty_since is None:
                self._empty_since = now

    def verdict(self, now: float | None = None) -> str | None:
        """Why the run should stop now, or None."""
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._died and self._died[0] < now - self._window:
                self._died.popleft()
            limit = max(self._deaths, self._peak)
            if len(self._died) > limit:
                return (f"{len(self._died)} workers died within {self._window:g} s (more than {limit:g}) "
                        f"without finishing their tasks")
            if self._no_worker is not None and self._empty_since is not None \
                    and now - self._empty_since >= self._no_worker:
                return f"no worker has been alive for {now - self._empty_since:.0f} s"
        return None

    def _watch(self) -> None:
        while not self._stop.wait(self._poll):
            reason = self.verdict()
            if reason is not None:
                self.reason = reason
                with contextlib.suppress(Exception):
                    self._client.unsubscribe_topic("all")  # else the scheduler logs a closed comm
                with contextlib.suppress(Exception):
                    self._client.close(timeout=10)  # wakes the run: its futures are cancelled
                return

    def raise_if_tripped(self) -> None:
        """Raise :class:`WorkersDyingError` (one line) if the watchdog stopped the run."""
        if self.reason is not None:
            raise WorkersDyingError(
                f"cluster: stopped the run because its workers keep dying: {self.reason}; a worker "
                f"above its memory_limit is restarted at once (at least {format_bytes(MIN_MEMORY_LIMIT)} per "
                f"worker), and the workers' logs say why they died. Finished tasks are kept in the run "
                f"directory's records/ and reused when you run again")
