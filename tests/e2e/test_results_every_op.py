"""Every op's records on a real run, swept over any parameter: the lr curve, the achieved
sparsity, and a sweep axis never collides with a recorded variable."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

import compressflow
from compressflow.ops.signature import stage_signature
from compressflow.registries import OPS
from compressflow.results import build_results
from compressflow.rundir import RunDir
from compressflow.rundir.records import LedgerEntry
from compressflow.spec.schema import GROUP_NAMES
from tests.support.records import ledger, swept_graph

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
    # as a table: one row per point of every stage, in the spec's order (not one per class and epoch)
    rows = compressflow.to_dataframe(tree).groupby("stage", sort=False).size()
    assert list(rows.items()) == [(s, tree[s]["task_key"].size) for s in EVERY_OP["stages"]]


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
        graph = swept_graph(op, axis)
        group = build_results(*graph, ledger(graph, [metrics, metrics]))["s"].to_dataset()
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
