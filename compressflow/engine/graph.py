"""Spec → task graph. Each stage expands to one node per sweep point; a node's key is
:func:`compressflow.engine.keys.task_key` of (op, its code version, validated params, the data
options its dataset uses, upstream keys, and a user op's source digest), so an unchanged node keeps its key across runs and
library upgrades (finished work is reused) and identical nodes collapse into one task.

Sweep points and ``needs`` combine like this: a stage runs once per combination of its own
sweep values and its upstream stages' points; axes with the same name are *aligned*, not
crossed (a student swept over ``seed`` that needs a teacher swept over ``seed`` pairs
student seed s with teacher seed s); to cross two stages' sweeps of one parameter instead,
rename one axis (``sweep: {model: {as: student_model, values: [...]}}``). A downstream stage therefore carries its upstream's
sweep axes as dimensions in the results. A *fan-in* input (annotated ``Upstream``) instead
takes every task of its upstream stage at once, and their axes are consumed, not inherited."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import dask
from dask.delayed import Delayed

from compressflow.engine.execute import execute_task
from compressflow.engine.keys import op_code, task_key
from compressflow.engine.node import Node, dask_key
from compressflow.ops.signature import stage_signature
from compressflow.rundir import RunDir
from compressflow.rundir.records import LedgerEntry
from compressflow.spec import PipelineSpec

__all__ = ["Node", "TaskGraph", "build_graph", "expand", "search_points", "upstream_keys"]


@dataclass
class TaskGraph:
    """Nodes per stage (in dependency order), the ``dask.delayed`` objects of the tasks to
    run and the records of those that are reused."""

    spec: PipelineSpec
    stages: dict[str, list[Node]]
    delayed: dict[str, Delayed]  # task key -> the task to run (under its Dask key, engine.node.dask_key)
    reused: dict[str, LedgerEntry] = field(default_factory=dict)  # finished in an earlier run: not run again
    searches: list[Any] = field(default_factory=list)  # compressflow.engine.search.Search, one per search

    @property
    def nodes(self) -> dict[str, Node]:
        """Every task: the stages' nodes and every rung of every search's trials."""
        out = {n.key: n for nodes in self.stages.values() for n in nodes}
        for search in self.searches:
            out.update({n.key: n for n in search.history if n.key not in out})
        return out

    def axes(self, stage: str) -> list[str]:
        """The sweep dimensions of a stage's results (upstream axes first)."""
        seen: dict[str, None] = {}
        for node in self.stages[stage]:
            seen.update(dict.fromkeys(node.point))
        return list(seen)


def expand(spec: PipelineSpec) -> dict[str, list[Node]]:
    """The nodes of every stage, in dependency order (no Dask objects)."""
    data = spec.data.options()
    stages: dict[str, list[Node]] = {}
    for name in spec.order():
        st = spec.stages[name]
        sig = stage_signature(st.op)
        nodes = []
        per_point = {arg: stages[up] for arg, up in st.needs.items() if arg not in sig.fan_in}
        gathered = {arg: tuple(n.key for n in stages[up]) for arg, up in st.needs.items() if arg in sig.fan_in}
        every = spec.checkpoint_every_of(name)
        code = op_code(st.op)  # once per stage: the op's source, read as it is now
        if st.search is not None:  # its tasks are made as the search goes (compressflow.engine.search)
            stages[name] = []
            continue
        for point, upstream in _points(st.axes(), per_point):
            own = st.own_params(point)
            params = sig.validate({**st.params, **own}, where=f"stages.{name}")
            needs = {arg: node.key for arg, node in upstream.items()} | gathered
            key = task_key(st.op, params, data, needs, code=code)
            nodes.append(Node(key, name, st.op, params, point, needs, dict(st.resources), every, code=code or ""))
        stages[name] = nodes
    return stages


def search_points(spec: PipelineSpec, stages: dict[str, list[Node]], name: str) -> list[tuple[dict, dict]]:
    """``(point, needs)`` of every search of stage ``name``: one per combination of its sweep
    values and upstream points, as :func:`expand` pairs them (``needs``: argument -> key(s))."""
    st = spec.stages[name]
    sig = stage_signature(st.op)
    per_point = {arg: stages[up] for arg, up in st.needs.items() if arg not in sig.fan_in}
    gathered = {arg: tuple(n.key for n in stages[up]) for arg, up in st.needs.items() if arg in sig.fan_in}
    return [(point, {arg: node.key for arg, node in upstream.items()} | gathered)
            for point, upstream in _points(st.axes(), per_point)]


def build_graph(spec: PipelineSpec, out: Path | str, reused: Mapping[str, LedgerEntry] | None = None, *,
                stages: dict[str, list[Node]] | None = None, study: str = "") -> TaskGraph:
    """Expand ``spec`` into nodes and wrap each in a ``dask.delayed`` call of the task executor.

    Parameters
    ----------
    spec : PipelineSpec
        A validated spec.
    out : path
        The run directory every worker writes artifacts and records into.
    reused : mapping, optional
        Task key → finished record (the resume plan, :func:`compressflow.engine.resume.plan_resume`):
        these tasks get no Dask node; their records are passed as they are to the tasks
        downstream, so no worker reads a record.
    stages : dict, optional
        The nodes :func:`expand` already made of ``spec`` (not expanded again).
    study : str
        The submission's id, passed to every task (cancelling, events) and part of every Dask
        key (:func:`~compressflow.engine.node.dask_key`), not of any task key.

    Returns
    -------
    TaskGraph
    """
    data = spec.data.options()
    run = RunDir(out)
    stages = expand(spec) if stages is None else stages
    reused = dict(reused or {})
    delayed: dict[str, Delayed] = {}
    for nodes in stages.values():
        for node in nodes:
            if node.key in delayed or node.key in reused:
                continue
            upstream = [reused[k] if k in reused else delayed[k] for k in upstream_keys(node.needs.values())]
            delayed[node.key] = dask.delayed(execute_task, pure=True)(node, data, run, *upstream, study=study,
                                                                      dask_key_name=dask_key(node.key, study))
    return TaskGraph(spec, stages, delayed, reused)


def upstream_keys(keys) -> list[str]:
    """Upstream keys in argument order (a fan-in argument contributes all of its keys)."""
    return [k for v in keys for k in ((v,) if isinstance(v, str) else v)]


def _points(sweep: dict[str, list[Any]], upstream: dict[str, list[Node]]):
    """Yield ``(point, {arg: upstream node})`` for every consistent combination."""
    args = list(upstream)
    for combo in itertools.product(*(upstream[a] for a in args)):
        merged: dict[str, Any] = {}
        if not _merge_all(merged, (n.point for n in combo)):
            continue
        for values in itertools.product(*sweep.values()):
            point = dict(merged)
            if _merge_all(point, [dict(zip(sweep, values))]):
                yield point, dict(zip(args, combo))


def _merge_all(into: dict[str, Any], points) -> bool:
    for p in points:
        for k, v in p.items():
            if k in into and into[k] != v:
                return False
            into[k] = v
    return True
