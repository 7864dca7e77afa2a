"""Building the results tree: every op's records, swept over any parameter, keep every recorded
value (a recorded variable named like a sweep axis or a ledger variable is kept as
``<name>_recorded``), and no stage or summary can overwrite the ledger or another group."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

import compressflow
from compressflow.errors import SpecError
from compressflow.engine.node import Node
from compressflow.registries import OPS, SUMMARIES
from compressflow.rundir import RunDir
from compressflow.rundir.records import LedgerEntry, Record
from compressflow.results import STAGE_LEDGER, build_results, save_results
from compressflow.spec import DataSpec, EnergySpec, PipelineSpec, StageSpec
from compressflow.spec.schema import GROUP_NAMES
from compressflow.ops.signature import stage_signature

T = {"model": "resnet18", "width": 0.125, "epochs": 1, "batch_size": 128}
L = "layer1.0.conv1"
#: one tiny classification study with every classification op, `lr` and `sparsity` swept (the two
#: reported crashes/losses), and one tiny detection study (a study reads one kind of dataset)
EVERY_OP = {
    "name": "every-op", "data": {"dataset": "digits", "image_size": 8, "channels": 1},
    "stages": {
        "teacher": {"op": "train", "params": T},
        "lr_grid": {"op": "train", "params": T, "sweep": {"lr": [0.1, 0.2]}},  # lr 0.1 is the teacher's task
        "test": {"op": "evaluate", "needs": {"model": "teacher"}},
        "student": {"op": "distill", "needs": {"teacher": "teacher"}, "params": {**T, "loss": "hkd"}},
        "dreamt": {"op": "synthesize", "needs": {"teacher": "teacher"}, "params": {"images": 20, "iterations": 2}},
        "student_datafree": {"op": "distill", "needs": {"teacher": "teacher", "data": "dreamt"}, "params": T},
        "qat": {"op": "quantize", "params": {**T, "latency_samples": 8, "latency_rounds": 1}},
        "cache": {"op": "activations", "needs": {"model": "teacher"}, "params": {"layers": [L]}},
        "blocks": {"op": "replace_layer", "needs": {"teacher": "teacher", "activations": "cache"},
                   "params": {"epochs": 1}, "sweep": {"layer": [L]}},
        "assembled": {"op": "assemble", "needs": {"teacher": "teacher", "blocks": "blocks"},
                      "params": {"max_drop": 1.0, "epochs": 1}},
        "crafted": {"op": "craft", "needs": {"teacher": "teacher"},
                    "params": {"layers": [L], "block_epochs": 1, "step_epochs": 0, "epochs": 1, "max_drop": 1.0}},
        "pruned": {"op": "prune", "needs": {"model": "teacher"}, "params": {"epochs": 1, "batch_size": 256},
                   "sweep": {"sparsity": [0.3, 0.6]}},
        "probe_original": {"op": "capture", "needs": {"model": "teacher"}, "params": {"probe": 64}},
        "probe_pruned": {"op": "capture", "needs": {"model": "pruned"}, "params": {"probe": 64}},
        "similarity": {"op": "svcca", "needs": {"a": "probe_pruned", "b": "probe_original"}, "params": {"keep": 4}},
        "bias": {"op": "bias", "needs": {"model": "pruned", "original": "teacher"}},
        "pies": {"op": "pie", "needs": {"models": "bias"}, "params": {"over": "sparsity"}},
        "idle": {"op": "wait"},
        "synthetic": {"op": "objective", "params": {"epochs": 1, "x": 0.7}},
    },
}
DET = {"width": 0.125, "epochs": 1, "batch_size": 4}
EVERY_DETECTION_OP = {
    "name": "every-detection-op", "data": {"dataset": "shapes", "image_size": 32, "num_images": 12},
    "stages": {"det_teacher": {"op": "train_detection", "params": DET},
               "det_student": {"op": "distill_detection", "needs": {"teacher": "det_teacher"}, "params": DET}},
}


@pytest.fixture(scope="module")
def every_op(client, tmp_path_factory):
    """The run directory and results of the classification study, and one finished record per
    op of both studies."""
    records: dict[str, LedgerEntry] = {}
    for spec in (EVERY_DETECTION_OP, EVERY_OP):
        out = tmp_path_factory.mktemp(spec["name"])
        tree = compressflow.run(spec, cluster=client, out=out, show_progress=False)
        run = RunDir(out)
        for key in run.record_keys():
            rec = run.finished(key)
            records.setdefault(rec.op, rec)
    return out, tree, records


def _record(out, key: str) -> xr.Dataset:
    return RunDir(out).finished(key).record.metrics


@pytest.mark.slow
def test_sweeping_lr_builds_and_keeps_the_lr_curve(every_op):
    out, tree, records = every_op
    assert set(records) == set(OPS), "add the new op to EVERY_OP"
    assert (tree["tasks"]["status"] == "ok").all()
    grid = xr.open_datatree(out / "results.zarr", engine="zarr")["lr_grid"].to_dataset().load()
    assert list(grid.lr.values) == [0.1, 0.2] and grid["lr_curve"].dims == ("lr", "epoch")
    for lr in (0.1, 0.2):
        key = str(grid.task_key.sel(lr=lr).values)
        np.testing.assert_array_equal(grid["lr_curve"].sel(lr=lr).values, _record(out, key)["lr_curve"].values)
    # the schedule scales the base rate: every epoch's rate doubles with lr
    np.testing.assert_allclose(grid["lr_curve"].sel(lr=0.2), 2 * grid["lr_curve"].sel(lr=0.1), rtol=1e-12)
    # the teacher is the lr=0.1 point: one task, labelled in each stage by that stage's point
    assert str(grid.task_key.sel(lr=0.1).values) == str(tree["teacher"]["task_key"].values)


@pytest.mark.slow
def test_sweeping_sparsity_keeps_the_achieved_sparsity(every_op):
    out, tree, _ = every_op
    pruned = xr.open_datatree(out / "results.zarr", engine="zarr")["pruned"].to_dataset().load()
    assert list(pruned.sparsity.values) == [0.3, 0.6]  # the axis: the targets
    achieved = pruned["sparsity_recorded"]
    assert achieved.attrs["recorded_name"] == "sparsity" and json.loads(pruned.attrs["renamed"]) == {
        "sparsity_recorded": "sparsity"}
    for target in (0.3, 0.6):
        rec = _record(out, str(pruned.task_key.sel(sparsity=target).values))
        assert float(achieved.sel(sparsity=target)) == float(rec["sparsity"])
        assert abs(float(rec["sparsity"]) - target) < 0.02 and float(rec["target_sparsity"]) == target


def _swept_graph(op: str, axis: str, stage: str = "s", values=(1, 2)) -> tuple[PipelineSpec, dict[str, list[Node]]]:
    """A one-stage study swept over ``axis``: its spec and its stage's tasks."""
    # model_construct: the results code only reads the spec; this sweep need not be a valid spec
    st = StageSpec.model_construct(op=op, params={}, needs={}, sweep={axis: list(values)}, resources={},
                                   scheduling=StageSpec.model_fields["scheduling"].default_factory())
    spec = PipelineSpec.model_construct(name="swept", data=DataSpec(), energy=EnergySpec(), stages={stage: st})
    return spec, {stage: [Node(f"{op}-{i}", stage, op, {}, {axis: v}) for i, v in enumerate(values)]}


def _tasks(graph: tuple[PipelineSpec, dict[str, list[Node]]], metrics: list[xr.Dataset]) -> dict[str, LedgerEntry]:
    return {n.key: LedgerEntry(n.key, n.stage, n.op, dict(n.point), status="ok", start=0.0, end=1.0 + i,
                              energy={"energy_kwh": 1e-6}, record=Record(m))
            for i, (n, m) in enumerate(zip(next(iter(graph[1].values())), metrics))}


@pytest.mark.parametrize("op", OPS.list())
def test_a_sweep_axis_never_collides_with_a_recorded_variable(every_op, op):
    """Swept over any name the op's stage could give an axis — each of its own parameters, and
    (an axis renamed with ``as:`` may be called anything) every variable, dimension and
    coordinate its record holds and every name the group takes from the ledger — a stage
    group keeps every recorded value, renamed ``<name>_recorded`` where the names collide."""
    assert set(every_op[2]) == set(OPS), "add the new op to EVERY_OP or EVERY_DETECTION_OP"
    metrics = every_op[2][op].record.metrics
    reserved_by_group = set(GROUP_NAMES)  # the group's own names: no axis is called so (the spec refuses it)
    axes = sorted({*stage_signature(op).params, *map(str, metrics.variables), *map(str, metrics.dims)}
                  - reserved_by_group)
    assert len(axes) > len(stage_signature(op).params)
    for axis in axes:
        graph = _swept_graph(op, axis)
        group = build_results(*graph, _tasks(graph, [metrics, metrics]))["s"].to_dataset()
        assert list(group[axis].values) == [1, 2] and list(group.status.values) == ["ok", "ok"], axis
        assert list(group.duration_s.values) == [1.0, 2.0], axis  # the ledger's, not a recorded one
        reserved = {axis, *reserved_by_group}
        for name, var in metrics.variables.items():
            kept = f"{name}_recorded" if name in reserved else name
            dims = tuple(f"{d}_recorded" if d in reserved else d for d in var.dims)
            for value in (1, 2):
                got = group[kept].sel({axis: value}) if axis in group[kept].dims else group[kept]
                assert got.dims == dims, (axis, kept, got.dims)
                np.testing.assert_array_equal(got.values, var.values, err_msg=f"{axis}: {kept}")


def test_recorded_values_equal_to_an_axis_survive_per_point(tmp_path):
    graph = _swept_graph("prune", "sparsity", values=(0.3, 0.6))
    metrics = [xr.Dataset({"sparsity": s, "layer_sparsity": ("layer", [s, s + 0.01]), "status": 5.0},
                          coords={"layer": ["conv1", "fc"]}) for s in (0.2999, 0.5957)]
    tree = build_results(*graph, _tasks(graph, metrics))
    save_results(tree, tmp_path)
    with xr.open_datatree(tmp_path / "results.zarr", engine="zarr") as disk:
        group = disk["s"].to_dataset().load()
    assert list(group.sparsity.values) == [0.3, 0.6]
    assert list(group.sparsity_recorded.values) == [0.2999, 0.5957]
    np.testing.assert_allclose(group.layer_sparsity.sel(sparsity=0.6), [0.5957, 0.6057])
    assert list(group.status.values) == ["ok", "ok"] and list(group.status_recorded.values) == [5.0, 5.0]
    assert json.loads(group.attrs["renamed"]) == {"sparsity_recorded": "sparsity", "status_recorded": "status"}


def test_a_task_without_a_record_beside_two_with_per_epoch_curves_still_builds():
    """xarray refused to concatenate 3+ points when one (a failed or cancelled task: no record)
    lacked the ``epoch`` coordinate the others' curves have; the results of a study with a
    failed task among trained ones could not be built."""
    graph = _swept_graph("train", "lr", values=(0.1, 0.2, 0.3))
    curve = xr.Dataset({"val_accuracy": 0.5, "val_accuracy_curve": ("epoch", [0.4, 0.5])}, coords={"epoch": [1, 2]})
    tasks = _tasks(graph, [curve, curve, xr.Dataset()])
    lost = tasks["train-2"]
    lost.status, lost.record = "failed", None
    group = build_results(*graph, tasks)["s"].to_dataset()
    assert list(group.status.values) == ["ok", "ok", "failed"]
    np.testing.assert_array_equal(group.val_accuracy_curve.sel(lr=0.2), [0.4, 0.5])
    assert group.val_accuracy_curve.sel(lr=0.3).isnull().all() and np.isnan(float(group.val_accuracy.sel(lr=0.3)))


def test_a_stage_named_tasks_cannot_overwrite_the_ledger():
    graph = _swept_graph("wait", "label", stage="tasks")
    metrics = xr.Dataset({"elapsed_s": 0.0})
    with pytest.raises(SpecError, match=r"^stages\.tasks: the name 'tasks' is taken by the results ledger"):
        build_results(*graph, _tasks(graph, [metrics, metrics]))


@pytest.mark.parametrize("path", ["/s", "/tasks"])
def test_a_summary_cannot_overwrite_a_group(monkeypatch, path):
    monkeypatch.setitem(SUMMARIES._items, "clobber", lambda spec, groups: {path: xr.Dataset()})
    graph = _swept_graph("wait", "label")
    metrics = xr.Dataset({"elapsed_s": 0.0})
    with pytest.raises(SpecError, match=rf"^stages\.{path[1:]}: .* taken by the study summary 'clobber'"):
        build_results(*graph, _tasks(graph, [metrics, metrics]))
