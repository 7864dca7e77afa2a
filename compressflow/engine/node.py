"""One task of a study: a stage at one sweep point (:class:`Node`), what the graph expands a
spec into and what a worker executes. Small and picklable.

A node's ``key`` is its *task key* (:func:`compressflow.engine.keys.task_key`): the name of its
record, the same in every run that asks for the same work, so finished records are reused. On
the cluster the task runs under a *Dask key* of its own submission, :func:`dask_key`: two
studies submitting the same work to one scheduler (two run directories, or one after another)
each run, record and cancel their own task instead of sharing one (Dask runs a key once and
hands every holder of it the same result)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Node", "dask_key", "task_of"]


@dataclass(frozen=True)
class Node:
    """One task: a stage at one sweep point."""

    key: str
    stage: str
    op: str
    params: dict[str, Any]
    point: dict[str, Any]
    needs: dict[str, str | tuple[str, ...]] = field(default_factory=dict)  # argument -> upstream key(s)
    resources: dict[str, float] = field(default_factory=dict)
    #: epochs between a training task's resumable states (the spec's, :meth:`PipelineSpec.checkpoint_every_of`;
    #: 0 or None: none); not in the key
    checkpoint_every: int | None = None
    # a search's trial at a rung: train until epoch ``budget`` of the full schedule, keeping the
    # resumable state under ``state_key`` (the full-budget task's key), which the next rung resumes
    budget: int | None = None
    state_key: str = ""
    #: the digest of the op's source its key holds (:func:`compressflow.engine.keys.op_code`; "" for
    #: none): a worker whose imported source differs refuses to run the task
    code: str = ""


def dask_key(task: str, study: str) -> str:
    """The Dask key of task key ``task`` in submission ``study`` (its id): unique to the
    submission, and still grouped under the op's name on Dask's dashboard
    (``dask.utils.key_split`` keeps the leading word before the hexadecimal digest).

    Examples
    --------
    >>> dask_key("wait-0123456789abcdef0123456789abcdef", "5f3a9c0e1b2d")
    'wait-0123456789abcdef0123456789abcdef-5f3a9c0e1b2d'
    >>> task_of("wait-0123456789abcdef0123456789abcdef-5f3a9c0e1b2d", "5f3a9c0e1b2d")
    'wait-0123456789abcdef0123456789abcdef'
    """
    return f"{task}-{study}"


def task_of(key: object, study: str) -> str | None:
    """The task key whose Dask key (:func:`dask_key`) in submission ``study`` is ``key``, or
    None when ``key`` is no task key of that submission (another study's, or not a
    compressflow task).

    Examples
    --------
    >>> task_of("wait-0123456789abcdef0123456789abcdef-5f3a9c0e1b2d", "another")
    """
    suffix = f"-{study}"
    if not isinstance(key, str) or not key.endswith(suffix) or len(key) == len(suffix):
        return None
    return key[: -len(suffix)]
