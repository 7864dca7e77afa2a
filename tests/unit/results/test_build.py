"""Building the results tree from hand-made records: every recorded value is kept (a recorded
variable named like a sweep axis or a ledger variable is kept as ``<name>_recorded``), and no
stage or summary can overwrite the ledger or another group."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from compressflow.errors import SpecError
from compressflow.registries import SUMMARIES
from compressflow.results import build_results, save_results
from tests.support.records import ledger, swept_graph


def test_recorded_values_equal_to_an_axis_survive_per_point(tmp_path):
    graph = swept_graph("prune", "sparsity", values=(0.3, 0.6))
    metrics = [xr.Dataset({"sparsity": s, "layer_sparsity": ("layer", [s, s + 0.01]), "status": 5.0},
                          coords={"layer": ["conv1", "fc"]}) for s in (0.2999, 0.5957)]
    tree = build_results(*graph, ledger(graph, metrics))
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
    graph = swept_graph("train", "lr", values=(0.1, 0.2, 0.3))
    curve = xr.Dataset({"val_accuracy": 0.5, "val_accuracy_curve": ("epoch", [0.4, 0.5])}, coords={"epoch": [1, 2]})
    tasks = ledger(graph, [curve, curve, xr.Dataset()])
    lost = tasks["train-2"]
    lost.status, lost.record = "failed", None
    group = build_results(*graph, tasks)["s"].to_dataset()
    assert list(group.status.values) == ["ok", "ok", "failed"]
    np.testing.assert_array_equal(group.val_accuracy_curve.sel(lr=0.2), [0.4, 0.5])
    assert group.val_accuracy_curve.sel(lr=0.3).isnull().all() and np.isnan(float(group.val_accuracy.sel(lr=0.3)))


def test_a_stage_named_tasks_cannot_overwrite_the_ledger():
    graph = swept_graph("wait", "label", stage="tasks")
    metrics = xr.Dataset({"elapsed_s": 0.0})
    with pytest.raises(SpecError, match=r"^stages\.tasks: the name 'tasks' is taken by the results ledger"):
        build_results(*graph, ledger(graph, [metrics, metrics]))


@pytest.mark.parametrize("path", ["/s", "/tasks"])
def test_a_summary_cannot_overwrite_a_group(monkeypatch, path):
    monkeypatch.setitem(SUMMARIES._items, "clobber", lambda spec, groups: {path: xr.Dataset()})
    graph = swept_graph("wait", "label")
    metrics = xr.Dataset({"elapsed_s": 0.0})
    with pytest.raises(SpecError, match=rf"^stages\.{path[1:]}: .* taken by the study summary 'clobber'"):
        build_results(*graph, ledger(graph, [metrics, metrics]))
