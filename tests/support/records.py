"""Hand-built records and run-directory edits, for tests of results and resume."""

from __future__ import annotations

import json

import xarray as xr

from compressflow.engine.node import Node
from compressflow.rundir.records import LedgerEntry, Record
from compressflow.spec import DataSpec, EnergySpec, PipelineSpec, StageSpec


def swept_graph(op: str, axis: str, stage: str = "s", values=(1, 2)) -> tuple[PipelineSpec, dict[str, list[Node]]]:
    """A one-stage study swept over ``axis``: its spec and its stage's tasks."""
    # model_construct: the results code only reads the spec; this sweep need not be a valid spec
    st = StageSpec.model_construct(op=op, params={}, needs={}, sweep={axis: list(values)}, resources={},
                                   scheduling=StageSpec.model_fields["scheduling"].default_factory())
    spec = PipelineSpec.model_construct(name="swept", data=DataSpec(), energy=EnergySpec(), stages={stage: st})
    return spec, {stage: [Node(f"{op}-{i}", stage, op, {}, {axis: v}) for i, v in enumerate(values)]}


def ledger(graph: tuple[PipelineSpec, dict[str, list[Node]]], metrics: list[xr.Dataset]) -> dict[str, LedgerEntry]:
    """One finished ledger entry per task of ``graph``'s stage, recording ``metrics`` in order."""
    return {n.key: LedgerEntry(n.key, n.stage, n.op, dict(n.point), status="ok", start=0.0, end=1.0 + i,
                              energy={"energy_kwh": 1e-6}, record=Record(m))
            for i, (n, m) in enumerate(zip(next(iter(graph[1].values())), metrics))}


def edit_record(path, fn, keep_digest=False) -> None:
    """Apply ``fn`` to the record file's JSON (dropping its digest unless ``keep_digest``)."""
    data = json.loads(path.read_text())
    if not keep_digest:
        data.pop("digest")  # as a record of an earlier version (no digest): the specific check must catch it
    fn(data)
    path.write_text(json.dumps(data))
