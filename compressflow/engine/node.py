"""One task of a study: a stage at one sweep point (:class:`Node`), what the graph expands a
spec into and what a worker executes. Small and picklable."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Node"]


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
