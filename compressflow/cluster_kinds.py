"""The cluster kinds beyond the embedded CPU cluster, each behind an optional dependency that
is imported only when its kind is asked for (the error names the extra to install):

* ``local-cuda`` — dask-cuda's ``LocalCUDACluster``: one worker per visible GPU, each
  advertising the resource ``GPU=1`` so a stage with ``resources: {GPU: 1}`` owns a whole
  device while it runs (which is what makes per-task GPU energy attributable).
* ``slurm`` — dask-jobqueue's ``SLURMCluster``: ``jobs`` batch jobs, each one worker with
  ``gpus_per_job`` GPUs requested from SLURM and advertised as the same resource.

Both, like ``local`` and ``address``, accept ``security``: ``temporary`` (a throw-away
self-signed certificate, for testing) or Dask's TLS settings (``tls_ca_file``,
``tls_client_cert``, ``tls_client_key``, ``require_encryption``, ...)."""

from __future__ import annotations

from typing import Any

from compressflow.errors import InputError

__all__ = ["OPTIONAL_KINDS", "make_cluster", "security"]

OPTIONAL_KINDS = ("local-cuda", "slurm")


def security(value: Any):
    """A ``distributed.security.Security`` from a cluster spec's ``security`` entry."""
    from distributed.security import Security

    if value is None or isinstance(value, Security):
        return value
    if value == "temporary":
        return Security.temporary()
    if isinstance(value, dict):
        try:
            return Security(**value)
        except TypeError as exc:
            raise InputError(f"--cluster: security: {exc}; give Dask TLS settings such as tls_ca_file, "
                             f"tls_client_cert, tls_client_key") from None
    raise InputError(f"--cluster: security must be 'temporary' or a mapping of Dask TLS settings, got {value!r}")


def make_cluster(kind: str, options: dict[str, Any]):
    """Start a ``local-cuda`` or ``slurm`` cluster from its spec options."""
    if kind == "local-cuda":
        cls = _optional("dask_cuda", "LocalCUDACluster", kind, "cuda")
        opts = {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:8787", "threads_per_worker": 1, **options}
        return cls(resources={"GPU": 1}, **opts)
    if kind == "slurm":
        cls = _optional("dask_jobqueue", "SLURMCluster", kind, "slurm")
        opts = dict(options)
        jobs = int(opts.pop("jobs", 1))
        gpus = int(opts.pop("gpus_per_job", 1))
        extra = list(opts.pop("job_extra_directives", []))
        if gpus:
            extra.append(f"--gpus={gpus}")
        args = list(opts.pop("worker_extra_args", []))
        if gpus:
            args += ["--resources", f"GPU={gpus}"]
        opts.setdefault("processes", 1)
        cluster = cls(job_extra_directives=extra, worker_extra_args=args, **opts)
        cluster.scale(jobs=jobs)
        return cluster
    raise InputError(f"--cluster: unknown kind {kind!r}")


def _optional(module: str, name: str, kind: str, extra: str):
    try:
        mod = __import__(module)
    except ImportError:
        raise InputError(f"--cluster: kind {kind!r} needs the optional package {module.replace('_', '-')}; "
                         f"install it with: pip install 'compressflow[{extra}]'") from None
    return getattr(mod, name)
