"""The cluster kinds beyond the embedded CPU cluster, each behind an optional dependency that
is imported only when its kind is asked for (the error names the extra to install):

* ``local-cuda`` — dask-cuda's ``LocalCUDACluster``: one worker per visible GPU, each
  advertising the resource ``GPU=1`` so a stage with ``resources: {GPU: 1}`` owns a whole
  device while it runs (which is what makes per-task GPU energy attributable).
* ``slurm`` — dask-jobqueue's ``SLURMCluster``: ``jobs`` batch jobs (or ``adapt:
  {minimum_jobs, maximum_jobs}``, Dask's adaptive scaling in jobs), each one worker with
  ``gpus_per_job`` GPUs requested from SLURM and advertised as the same resource. Workers
  retire at ``lifetime`` (± ``lifetime_stagger``), by default a margin before the job's
  ``walltime`` (:func:`~compressflow.engine.cluster_options.worker_lifetime`): a retiring
  worker hands its running task back to the scheduler, which runs it on another worker (where
  it resumes from its checkpoint), and a fresh job replaces the one that ended — instead of
  SLURM killing the job mid-task at its walltime.

Both, like ``local`` and ``address``, accept ``security``: ``temporary`` (a throw-away
self-signed certificate held in memory by this process), ``none`` (plain TCP) or Dask's TLS
settings (``tls_ca_file``, ``tls_client_cert``, ``tls_client_key``, ``require_encryption``,
...). Only the embedded ``local`` kind defaults to ``temporary``: the workers of the others
are started elsewhere (other jobs, other machines), which a throw-away certificate held by
this process cannot reach without writing it to a shared disk."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from compressflow.engine.cluster_options import OPTIONAL_KINDS, SECURITY_CHOICES, worker_lifetime
from compressflow.engine.main_guard import refuse_unguarded_start
from compressflow.errors import InputError

__all__ = ["LIFETIME_MOVES", "OPTIONAL_KINDS", "SECURITY_CHOICES", "make_cluster", "security"]

#: How often a task may move to another worker because its worker reached its lifetime (and
#: could not retire cleanly, see ``_allow_moves``) before Dask marks it failed.
LIFETIME_MOVES = 20


def security(value: Any, default: Any = None):
    """A ``distributed.security.Security`` (or ``None``: plain TCP) from a cluster spec's
    ``security`` entry; ``null``/absent means ``default``.

    Raises
    ------
    InputError
        Anything else than ``temporary``, ``none``, a ``Security`` or a mapping of TLS settings
        whose files exist (one line naming the bad setting).
    """
    from distributed.security import Security

    if value is None:
        value = default
    if value is None or value == "none":
        return None
    if isinstance(value, Security):
        return value
    if value == "temporary":
        return Security.temporary()  # needs `cryptography`, a declared dependency
    if isinstance(value, dict):
        for key, setting in value.items():
            if key not in Security.__slots__ or key == "extra_conn_args":
                valid = ", ".join(k for k in Security.__slots__ if k != "extra_conn_args")
                raise InputError(f"--cluster: security: unknown TLS setting {key!r}; valid: {valid}")
            if key == "require_encryption":
                if not isinstance(setting, bool):
                    raise InputError(f"--cluster: security.require_encryption: {setting!r} is not allowed; give true or false")
            elif key in ("tls_min_version", "tls_max_version"):
                continue  # ssl.TLSVersion members; Security checks them
            elif not isinstance(setting, str) or not setting:
                raise InputError(f"--cluster: security.{key}: {setting!r} is not allowed; give a file path (PEM)")
            elif key != "tls_ciphers" and "\n" not in setting and not os.path.isfile(setting):
                raise InputError(f"--cluster: security.{key}: no such file {setting!r}; give the path of a PEM file")
        try:
            return Security(**value)
        except (TypeError, ValueError) as exc:
            raise InputError(f"--cluster: security: {str(exc).splitlines()[0]}; give Dask TLS settings such as "
                             f"tls_ca_file, tls_client_cert, tls_client_key") from None
    raise InputError(f"--cluster: security: {value!r} is not allowed; give {SECURITY_CHOICES}")


def make_cluster(kind: str, options: dict[str, Any]):
    """Start a ``local-cuda`` or ``slurm`` cluster from its spec options."""
    if kind == "local-cuda":
        refuse_unguarded_start()  # its workers, like the embedded cluster's, re-import the main script
        cls = _optional("dask_cuda", "LocalCUDACluster", kind, "cuda")
        opts = {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:8787", "threads_per_worker": 1, **options}
        return cls(resources={"GPU": 1}, **opts)
    if kind == "slurm":
        return _slurm(_optional("dask_jobqueue", "SLURMCluster", kind, "slurm"), options)
    raise InputError(f"--cluster: unknown kind {kind!r}")


def _slurm(cls, options: dict[str, Any]):
    """A ``SLURMCluster`` from a checked slurm spec: GPUs per job requested and advertised,
    workers that retire before their job's walltime, and a fixed or adaptive number of jobs."""
    opts = dict(options)
    jobs = int(opts.pop("jobs", 1))
    adapt = opts.pop("adapt", None)
    gpus = int(opts.pop("gpus_per_job", 1))
    lifetime = worker_lifetime(opts)
    opts.pop("lifetime", None)
    opts.pop("lifetime_stagger", None)
    extra = list(opts.pop("job_extra_directives", []))
    if gpus:
        extra.append(f"--gpus={gpus}")
    args = list(opts.pop("worker_extra_args", []))
    if gpus:
        args += ["--resources", f"GPU={gpus}"]
    if lifetime is not None:
        # Dask's worker retires itself at its lifetime: the scheduler reschedules its running
        # task on another worker and, with adapt or a fixed jobs count, a fresh job replaces it
        life, stagger = lifetime
        args += ["--lifetime", f"{life:g}s", "--lifetime-stagger", f"{stagger:g}s"]
    start_timeout = opts.pop("start_timeout", None)
    opts.setdefault("processes", 1)
    cluster = cls(job_extra_directives=extra, worker_extra_args=args, **opts)
    if adapt is not None:
        cluster.adapt(minimum_jobs=adapt["minimum_jobs"], maximum_jobs=adapt["maximum_jobs"])
    else:
        cluster.scale(jobs=jobs)
    if lifetime is not None:
        _allow_moves(cluster)
    # The run reads its workers once before it submits (their resources, hosts and placement),
    # so it starts when the first job's worker has connected, not while every job is queued
    wait = getattr(cluster, "wait_for_workers", None)
    if wait is not None:
        try:
            wait(1, timeout=start_timeout)
        except BaseException as exc:
            cluster.close()
            if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
                raise InputError(f"--cluster: start_timeout: no SLURM job's worker connected within {start_timeout:g} s; "
                                 f"check the jobs with squeue and their logs (log_directory), or raise start_timeout"
                                 ) from None
            raise
    return cluster


def _allow_moves(cluster) -> None:
    """Let a task move between retiring workers ``LIFETIME_MOVES`` times before Dask gives up.

    A worker at its lifetime retires cleanly (its running task is rescheduled without counting
    as a failure) only if the results it holds can be copied to another worker; the last
    worker of an adaptive cluster running the last long task has none to copy them to, so
    each of that task's moves counts as a worker death, and Dask fails a task after
    ``distributed.scheduler.allowed-failures`` (3) deaths — a task spanning five walltimes
    would fail although nothing crashed. A larger setting of the user's is kept."""
    scheduler: Any = getattr(cluster, "scheduler", None)
    if isinstance(getattr(scheduler, "allowed_failures", None), int):
        scheduler.allowed_failures = max(scheduler.allowed_failures, LIFETIME_MOVES)


def _optional(module: str, name: str, kind: str, extra: str):
    try:
        mod = __import__(module)
    except ImportError:
        raise InputError(f"--cluster: kind {kind!r} needs the optional package {module.replace('_', '-')}; "
                         f"install it with: pip install 'compressflow[{extra}]'") from None
    return getattr(mod, name)
