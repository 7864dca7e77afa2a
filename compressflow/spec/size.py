"""Counting a spec's tasks before any is built, to refuse one that expands past
:data:`MAX_TASKS` (a typo such as a 1,000-value sweep crossed with another) with a
:class:`~compressflow.errors.SpecError` line, without materialising a product of sweeps."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from compressflow.errors import SpecError
from compressflow.ops.signature import stage_signature

if TYPE_CHECKING:
    from compressflow.spec.schema import PipelineSpec

__all__ = ["MAX_TASKS", "check_size", "task_counts"]

#: the most tasks a spec may expand to (a typo such as a 1,000-value sweep crossed with
#: another is refused before anything is built); raise it for a genuinely larger study
MAX_TASKS = 10_000
# the work a task count may do joining aligned sweep axes before it gives up counting exactly
_COUNT_BUDGET = 1_000_000


def check_size(spec: PipelineSpec) -> None:
    """Refuse a spec that expands to more than :data:`MAX_TASKS` tasks, before any is built."""
    try:
        counts = task_counts(spec)
    except _TooMany as exc:
        raise SpecError(f"stages.{exc.stage}: the sweeps expand to too many tasks to count (more than "
                        f"{_COUNT_BUDGET:,} aligned combinations); the limit is {MAX_TASKS:,} tasks: sweep "
                        f"fewer values or split the study") from None
    total = sum(counts.values())
    if total > MAX_TASKS:
        big = sorted(counts.items(), key=lambda kv: -kv[1])[:3]
        detail = ", ".join(f"{name}: {n:,}" for name, n in big if n)
        raise SpecError(f"stages: the sweeps expand to {total:,} tasks ({detail}), more than the limit of "
                        f"{MAX_TASKS:,}; sweep fewer values or split the study into several specs")


def task_counts(spec: PipelineSpec) -> dict[str, int]:
    """Tasks per stage, counted from the sweep sizes and the upstream points without building
    any (or materialising a product of sweeps).

    The rule is :mod:`compressflow.engine.graph`'s: a stage runs once per consistent combination of
    its own sweep values and one point of each (non fan-in) upstream stage, where axes with
    the same name are aligned, not crossed. The count is of graph nodes per stage; identical
    nodes (the same op, params and upstream) collapse into one task, so a run may have fewer.

    Examples
    --------
    >>> from compressflow.spec import load_spec
    >>> spec = load_spec({"name": "demo", "stages": {
    ...     "teacher": {"op": "train", "sweep": {"seed": [0, 1, 2]}},
    ...     "student": {"op": "distill", "needs": {"teacher": "teacher"},
    ...                 "sweep": {"seed": [0, 1, 2], "temperature": [2, 4, 8, 16]}}}})
    >>> task_counts(spec)
    {'teacher': 3, 'student': 12}
    """
    points: dict[str, _Points] = {}
    for name in spec.order():
        st = spec.stages[name]
        fan_in = stage_signature(st.op).fan_in
        pts = _Points([])
        for arg, upstream in st.needs.items():
            if arg not in fan_in:
                pts = pts.join(points[upstream], name)
        for axis, values in st.axes().items():
            pts = pts.join(_Points([((axis,), Counter((_hashable(v),) for v in values))]), name)
        points[name] = pts
    return {name: pts.size * _tasks_per_point(spec, name) for name, pts in points.items()}


def _tasks_per_point(spec: PipelineSpec, name: str) -> int:
    """1, or for a search stage the most tasks one search runs (every trial through every rung)."""
    from compressflow.spec.search import rungs

    search = spec.stages[name].search
    if search is None:
        return 1
    return search.n_trials() * (len(rungs(search.budget)) if search.budget is not None else 1)


class _TooMany(Exception):
    def __init__(self, stage: str) -> None:
        self.stage = stage


class _Points:
    """A stage's sweep points as a product of independent factors, each a multiset of rows
    over its own axes (row → how many nodes have it). Crossing with a new axis adds a factor
    (nothing is enumerated); only factors whose axes are aligned are joined row by row."""

    def __init__(self, factors: list[tuple[tuple[str, ...], Counter]]) -> None:
        self.factors = factors

    @property
    def size(self) -> int:
        return math.prod(sum(rows.values()) for _, rows in self.factors)

    def join(self, other: _Points, stage: str) -> _Points:
        factors = list(self.factors)
        for factor in other.factors:
            touching = [f for f in factors if set(f[0]) & set(factor[0])]
            factors = [f for f in factors if all(f is not t for t in touching)]
            for f in sorted(touching, key=lambda f: -len(set(f[0]) & set(factor[0]))):
                factor = _join(factor, f, stage)
            factors.append(factor)
        return _Points(factors)


def _join(a: tuple[tuple[str, ...], Counter], b: tuple[tuple[str, ...], Counter], stage: str):
    """Natural join of two factors on their shared axes, multiplicities multiplied."""
    (axes_a, rows_a), (axes_b, rows_b) = a, b
    shared = [x for x in axes_a if x in axes_b]
    key_a = [axes_a.index(x) for x in shared]
    key_b = [axes_b.index(x) for x in shared]
    extra = [i for i, x in enumerate(axes_b) if x not in axes_a]
    index: dict[tuple, list[tuple[tuple, int]]] = defaultdict(list)
    for row, n in rows_b.items():
        index[tuple(row[i] for i in key_b)].append((tuple(row[i] for i in extra), n))
    out: Counter = Counter()
    work = 0
    for row, n in rows_a.items():
        for more, m in index.get(tuple(row[i] for i in key_a), ()):
            out[row + more] += n * m
            work += 1
            if work > _COUNT_BUDGET:
                raise _TooMany(stage)
    return axes_a + tuple(axes_b[i] for i in extra), out


def _hashable(value: Any) -> Any:
    """A hashable stand-in equal exactly when the values are (1 == 1.0, as the graph compares)."""
    if isinstance(value, Mapping):
        return frozenset((k, _hashable(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, set):
        return frozenset(_hashable(v) for v in value)
    return value
