"""What a cluster spec may say: one table of the options (``OPTIONS``), what each allows and
its check, and reading a cluster spec file. Everything here runs before any cluster starts, so
a bad option fails with one line and nothing to clean up."""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dask.utils import format_bytes, parse_bytes, parse_timedelta

from compressflow.spec._yaml import read_yaml
from compressflow.errors import SpecError, did_you_mean

__all__ = ["ADDRESS_SCHEMES", "CLOSE_S", "KINDS", "LOCAL_DEFAULTS", "MIN_MEMORY_LIMIT", "OPTIONAL_KINDS", "OPTIONS",
           "SECURITY_CHOICES", "Option", "check_options", "load_cluster_spec", "slurm_seconds", "worker_lifetime"]

#: cluster kinds that need an optional extra (dask-cuda, dask-jobqueue)
OPTIONAL_KINDS = ("local-cuda", "slurm")
KINDS = ("local", "address", *OPTIONAL_KINDS)

#: How a spec asks for TLS: ``temporary`` (throw-away credentials), ``none`` (plain TCP), or
#: a mapping of Dask's TLS settings (the keyword arguments of ``distributed.security.Security``).
SECURITY_CHOICES = ("temporary: TLS with throw-away credentials held only by this process, "
                    "none: plain TCP (no authentication), or a mapping of Dask TLS settings "
                    "(tls_ca_file, tls_client_cert, tls_client_key, require_encryption, ...)")

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


def slurm_seconds(v: Any) -> int:
    """Seconds in a SLURM time limit (``sbatch --time``): ``M``, ``M:S``, ``H:M:S``, ``D-H``,
    ``D-H:M`` or ``D-H:M:S``; a bare number is minutes, as SLURM reads it."""
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise ValueError
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", str(v).strip())
    if not m:
        raise ValueError
    days, a, b, c = m.groups()
    n = [int(x) if x is not None else 0 for x in (days, a, b, c)]
    if days is not None:  # D-H, D-H:M, D-H:M:S
        seconds = n[0] * 86400 + n[1] * 3600 + n[2] * 60 + n[3]
    elif c is not None:  # H:M:S
        seconds = n[1] * 3600 + n[2] * 60 + n[3]
    elif b is not None:  # M:S
        seconds = n[1] * 60 + n[2]
    else:  # M
        seconds = n[1] * 60
    if seconds <= 0:
        raise ValueError
    return seconds


def _walltime(v: Any) -> Any:
    slurm_seconds(v)
    return v  # dask-jobqueue writes it into the job script as given


def _duration(zero: bool) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise ValueError
        try:
            seconds = parse_timedelta(v, default="seconds")
        except (ValueError, KeyError, TypeError):
            raise ValueError from None
        if seconds is None or not math.isfinite(seconds) or not (0 <= seconds if zero else 0 < seconds) \
                or seconds > 366 * 86400:
            raise ValueError
        return v

    return check


_ADAPT_KEYS = ("minimum_jobs", "maximum_jobs")


def _adapt(v: Any) -> dict[str, int]:
    if not isinstance(v, dict) or set(v) - set(_ADAPT_KEYS) or "maximum_jobs" not in v:
        raise ValueError
    low, high = v.get("minimum_jobs", 0), v["maximum_jobs"]
    for n in (low, high):
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 10000:
            raise ValueError
    if high < 1 or low > high:
        raise ValueError
    return {"minimum_jobs": low, "maximum_jobs": high}


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
    "walltime": Option(_walltime, "a SLURM time limit: 'HH:MM:SS', 'MM:SS', minutes, or 'D-HH:MM:SS', e.g. '01:00:00'"),
    "lifetime": Option(_duration(zero=False), "a duration above 0 such as '55m', '1h' or 90 (seconds)"),
    "lifetime_stagger": Option(_duration(zero=True), "a duration of 0 or more such as '2m' or 30 (seconds)"),
    "start_timeout": Option(_seconds, "a number of seconds above 0 (at most 86400) to wait for the first job's worker, "
                                      "e.g. 600; absent: as long as the queue takes"),
    "adapt": Option(_adapt, "a mapping {minimum_jobs: N, maximum_jobs: M} of whole numbers with "
                            "0 <= N <= M, 1 <= M <= 10000, e.g. {minimum_jobs: 1, maximum_jobs: 8}"),
}

#: Seconds a Dask worker may take to close once its lifetime is reached: it hands its
#: running task back at once but waits up to 30 s for the task's thread before it exits.
CLOSE_S = 30.0

#: The options each kind takes; the optional kinds pass any other key on to their library.
_KIND_OPTIONS = {
    "local": (*LOCAL_DEFAULTS, "security"),
    "address": ("address", "timeout", "security"),
    "local-cuda": (*LOCAL_DEFAULTS, "security"),
    "slurm": ("jobs", "gpus_per_job", "walltime", "lifetime", "lifetime_stagger", "adapt", "start_timeout",
              "security"),
}


def check_options(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """Check a cluster spec's options against ``OPTIONS``; return them as the cluster takes them.

    Raises
    ------
    SpecError
        One line naming the option, quoting the bad value and saying what is allowed.
    """
    if kind not in KINDS:
        raise SpecError(f"--cluster: kind {kind!r} is not supported{did_you_mean(kind, KINDS)}; "
                        f"valid kinds: {', '.join(KINDS)}")
    known = _KIND_OPTIONS[kind]
    if kind in ("local", "address"):
        unknown = sorted(set(options) - set(known), key=str)
        if unknown:
            raise SpecError(f"--cluster: unknown option {unknown[0]!r}{did_you_mean(unknown[0], known)} for "
                            f"a{'n' if kind == 'address' else ''} {kind} cluster; valid: {', '.join(known)}")
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
    if kind == "slurm":
        _check_slurm(checked)
    return checked


def _check_slurm(options: dict[str, Any]) -> None:
    """The SLURM options that only make sense together: a fixed ``jobs`` or ``adapt``, and a
    worker lifetime that ends before the job's walltime (else SLURM kills the worker mid-task
    and the task counts as a worker death instead of being handed back)."""
    if "jobs" in options and "adapt" in options:
        raise SpecError(f"--cluster: jobs: {options['jobs']!r} is not allowed together with adapt; give either a "
                        f"fixed number of jobs or adapt: {{minimum_jobs: N, maximum_jobs: M}}")
    if "lifetime_stagger" in options and "lifetime" not in options and "walltime" not in options:
        raise SpecError("--cluster: lifetime_stagger: needs lifetime (or walltime, from which the lifetime is derived)")
    lifetime = worker_lifetime(options)
    if lifetime is None:
        return
    life, stagger = lifetime
    if life <= 0:
        raise SpecError(f"--cluster: walltime: {options['walltime']!r} is too short to derive a worker lifetime "
                        f"from (a margin of 10 %, at least 1 min, is kept); give a longer walltime or a lifetime")
    if stagger > life:
        raise SpecError(f"--cluster: lifetime_stagger: {options['lifetime_stagger']!r} is not allowed with a lifetime "
                        f"of {life:g} s; give a stagger no longer than the lifetime")
    if "walltime" not in options:
        return
    wall = slurm_seconds(options["walltime"])
    if life + stagger > wall - CLOSE_S:
        what = f"lifetime: {options['lifetime']!r}" if "lifetime" in options else f"walltime: {options['walltime']!r}"
        raise SpecError(f"--cluster: {what} is not allowed: lifetime {life:g} s + lifetime_stagger {stagger:g} s must "
                        f"end {CLOSE_S:g} s before the walltime ({options['walltime']!r} = {wall} s) so the worker "
                        f"hands its task back before SLURM kills the job; give a lifetime of at most "
                        f"{max(0.0, wall - CLOSE_S - stagger):g} s")


def worker_lifetime(options: dict[str, Any]) -> tuple[float, float] | None:
    """``(lifetime, stagger)`` in seconds for a SLURM cluster's workers, or ``None`` (no limit).

    Given ``lifetime`` (and ``lifetime_stagger``, default 0) they are used as they are;
    otherwise a ``walltime`` gives ``lifetime = walltime - margin`` with ``margin`` 10 % of the
    walltime (at least 1 min, at most 10 min) and a stagger of a quarter of the margin, so
    jobs started together do not all retire at once and every worker has closed at least
    ``0.75 * margin`` before SLURM would kill it."""
    if "lifetime" in options:
        life = float(parse_timedelta(options["lifetime"], default="seconds"))
        stagger = float(parse_timedelta(options.get("lifetime_stagger", 0), default="seconds"))
        return life, stagger
    if "walltime" not in options:
        return None
    wall = slurm_seconds(options["walltime"])
    margin = min(max(0.1 * wall, 60.0), 600.0)
    if "lifetime_stagger" in options:
        return wall - margin, float(parse_timedelta(options["lifetime_stagger"], default="seconds"))
    return wall - margin, margin / 4


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
        alias expansion included; see :func:`compressflow.spec._yaml.read_yaml`), not a mapping,
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
        raise SpecError(f"--cluster: kind {kind!r} in {where} is not supported{did_you_mean(kind, KINDS)}; "
                        f"valid kinds: {', '.join(KINDS)}")
    return {"kind": kind, **check_options(kind, raw)}
