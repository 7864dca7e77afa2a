"""A submitted study's search stages, step by step: each time a search asks for tasks (its
first trials, or the next rung of one that reported), reuse those finished earlier and submit
the others to the study's client (:class:`~compressflow.api.study.Study` calls
:func:`advance` from its collecting thread)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from compressflow.energy.carbon import co2_grams
from compressflow.engine.resume import plan_resume
from compressflow.engine.submission import submit_node

if TYPE_CHECKING:  # the Study is typed Any: this module is imported by compressflow.api.study
    from compressflow.engine.node import Node
    from compressflow.engine.search import Search
    from compressflow.rundir.records import LedgerEntry

__all__ = ["advance", "trial_energy"]


def advance(study: Any, search: Search, nodes: list[Node], done: Any) -> None:
    """Run a search's next tasks for ``study`` (a :class:`~compressflow.api.study.Study`):
    reuse one finished in an earlier run (and go on with what the search asks next), submit the
    others and add their futures to ``done`` (the study's ``distributed.as_completed``)."""
    graph = study.graph
    queue = list(nodes)
    while queue:
        node = queue.pop(0)
        with study._lock:
            study._search_of[node.key] = search
            graph.stages[search.stage] = [t.latest for s in graph.searches if s.stage == search.stage
                                          for t in s.trials if t.latest is not None]
        known = study._done.get(node.key) or graph.reused.get(node.key)
        if known is not None:  # the same task again (a configuration proposed twice): shared
            queue.extend(search.finished(known, energy=trial_energy(study, known)))
            continue
        if node.key in study._futures:  # running: its end advances every trial waiting on it
            continue
        earlier = plan_resume([node], study._run)
        if node.key in earlier:
            with study._lock:
                graph.reused[node.key] = earlier[node.key]
            queue.extend(search.finished(earlier[node.key], energy=trial_energy(study, earlier[node.key])))
            continue
        fut = submit_node(study.client, graph, node, study._futures, study._run, study.id)
        study._futures[node.key] = fut
        done.add(fut)


def trial_energy(study: Any, entry: LedgerEntry) -> dict[str, float]:
    """What a search weighs a finished trial by: its energy, CO₂ (the study's PUE and carbon
    intensity) and duration."""
    kwh = float(entry.energy.get("energy_kwh", math.nan))
    return {"energy_kwh": kwh, "co2_g": co2_grams(kwh, study.spec.energy.pue, study._intensity),
            "duration_s": float(entry.duration_s)}
