"""Hand-built records and run-directory edits, for tests of results and resume."""

from __future__ import annotations

import json

import xarray as xr

from compressflow.engine.node import Node
from compressflow.rundir import RunDir
from compressflow.rundir.files import atomic_write_bytes, sha256_file
from compressflow.rundir.records import Artifact, LedgerEntry, Record
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


def finished_record(out, key="train-abc", accuracy=0.9):
    """A record as ``execute_task`` persists it (signed with ``out``'s key), with a real
    artifact file ``out/artifacts/<key>.pt``; its path."""
    art_path = out / "artifacts" / f"{key}.pt"
    atomic_write_bytes(art_path, b"weights")
    metrics = xr.Dataset({"accuracy": accuracy, "val_accuracy_curve": ("epoch", [0.5, 0.8])})
    task = LedgerEntry(key, "teacher", "train", {"seed": 0}, status="ok", worker="w", start=1.0, end=2.0,
                       energy={"energy_kwh": 1e-5, "cpu_kwh": 1e-5, "gpu_kwh": 0.0, "ram_kwh": 0.0, "method": "x"},
                       attempts=1, workers_tried=["w"],
                       record=Record(metrics, Artifact("checkpoint", str(art_path), sha256_file(art_path), {})))
    return RunDir(out).write_record(task)


def edit_record(path, fn, resign=True) -> None:
    """Apply ``fn`` to the record file's JSON and, with ``resign``, sign it again with its run
    directory's key: a validly signed but semantically bad record, which the specific check
    must catch. Without ``resign`` the old digest stays (a hand edit, which the digest catches)."""
    from compressflow.rundir.secret import digest_of, read_key

    data = json.loads(path.read_text())
    digest = data.pop("digest")
    fn(data)
    data["digest"] = digest_of(data, read_key(path.parent.parent)) if resign else digest
    path.write_text(json.dumps(data))
