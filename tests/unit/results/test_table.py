"""``to_dataframe``: the results as one table, one row per task or sweep point of every stage —
not broadcast over ``class``/``epoch`` as ``tree[stage].to_dataset().to_dataframe()`` is — with
the ledger's cost beside the stage's scalar metrics, for every kind of stage. Trees are built
from hand-made ledger entries (and a real search driven without Dask)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import compressflow
from compressflow.engine.node import Node
from compressflow.errors import InputError
from compressflow.ops.objective import known_accuracy
from compressflow.registries import SUMMARIES
from compressflow.results import build_results, save_results, to_dataframe
from compressflow.rundir.records import LedgerEntry, Record
from compressflow.spec import DataSpec, EnergySpec, PipelineSpec, StageSpec
from tests.unit.engine.test_search import BUDGET, search_spec, simulate

EPOCHS, CLASSES = 15, 10


def study(stages: dict[str, tuple[str, dict, list[tuple[str, dict, xr.Dataset | None]]]], reused=()):
    """The results tree of a study of ``stages``: name → (op, sweep, [(task key, point, metrics or
    None for a task not finished)]). Task ``i`` of a stage takes ``i + 1`` seconds and ``(i + 1)``
    µkWh times the stage's position + 1."""
    default = StageSpec.model_fields["scheduling"].default_factory
    spec = PipelineSpec.model_construct(name="t", data=DataSpec(), energy=EnergySpec(), stages={
        name: StageSpec.model_construct(op=op, params={}, needs={}, sweep=sweep, resources={}, scheduling=default())
        for name, (op, sweep, _) in stages.items()})
    nodes, tasks = {}, {}
    for s, (name, (op, _, points)) in enumerate(stages.items()):
        nodes[name] = [Node(key, name, op, {}, point) for key, point, _ in points]
        for i, (key, point, metrics) in enumerate(points):
            tasks[key] = (LedgerEntry(key, name, op, point) if metrics is None else
                          LedgerEntry(key, name, op, point, status="ok", start=0.0, end=i + 1.0,
                                      energy={"energy_kwh": (s + 1) * (i + 1) * 1e-6}, record=Record(metrics)))
    return build_results(spec, nodes, tasks, reused=reused)


def classification(accuracy: float, flops: float = 1e9) -> xr.Dataset:
    """A train/distill record: scalars, per-class scores, a confusion matrix, per-epoch curves."""
    rng = np.random.default_rng(int(accuracy * 1000))
    return xr.Dataset({"accuracy": accuracy, "val_accuracy": accuracy - 0.01, "train_flops": flops, "params": 1234,
                       "class_recall": ("class", rng.random(CLASSES)),
                       "confusion": (("true_class", "pred_class"), rng.integers(0, 9, (CLASSES, CLASSES))),
                       "train_loss": ("epoch", rng.random(EPOCHS)), "val_accuracy_curve": ("epoch", rng.random(EPOCHS))},
                      coords={"epoch": np.arange(1, EPOCHS + 1)})


@pytest.fixture(scope="module")
def kd_tree():
    """An unswept teacher, and a KD stage swept over temperature (listed out of order): τ=2 reused
    from an earlier run, τ=4 not finished."""
    return study({
        "teacher": ("train", {}, [("train-t", {}, classification(0.95, 5e9))]),
        "kd": ("distill", {"temperature": [8, 2, 4]}, [("distill-8", {"temperature": 8}, classification(0.91)),
                                                      ("distill-2", {"temperature": 2}, classification(0.93)),
                                                      ("distill-4", {"temperature": 4}, None)]),
    }, reused=["distill-2"])


def test_one_row_per_point_with_its_metrics_and_ledger_cost(kd_tree):
    broadcast = kd_tree["kd"].to_dataset().to_dataframe()  # what a user had: every point × class × epoch × ...
    assert len(broadcast) == 3 * CLASSES ** 3 * EPOCHS
    table = to_dataframe(kd_tree)
    assert len(table) == 4
    assert list(table.stage) == ["teacher", "kd", "kd", "kd"] and list(table.op) == ["train", "distill", "distill", "distill"]
    np.testing.assert_array_equal(table.temperature, [np.nan, 8, 2, 4])  # the spec's sweep order, not sorted
    np.testing.assert_array_equal(table.accuracy, [0.95, 0.91, 0.93, np.nan])
    np.testing.assert_allclose(table.val_accuracy, [0.94, 0.90, 0.92, np.nan])
    np.testing.assert_array_equal(table.train_flops, [5e9, 1e9, 1e9, np.nan])
    assert list(table.status) == ["ok", "ok", "ok", "pending"]
    assert list(table.task_key) == ["train-t", "distill-8", "distill-2", "distill-4"]
    assert list(table.reused) == [False, False, True, False]
    ledger = kd_tree["tasks"].to_dataset()
    np.testing.assert_array_equal(table.energy_kwh, [1e-6, 2e-6, 4e-6, np.nan])
    np.testing.assert_array_equal(table.co2_g, ledger.co2_g.sel(task=list(table.task_key)).values)
    assert (table.co2_g.iloc[:3] > 0).all()
    np.testing.assert_array_equal(table.duration_s, [1.0, 1.0, 2.0, np.nan])
    assert set(table.columns).isdisjoint({"class_recall", "confusion", "train_loss", "val_accuracy_curve", "epoch",
                                          "class", "true_class", "pred_class"})
    assert list(table.columns[:4]) == ["stage", "op", "temperature", "status"]
    assert list(table.columns[-6:]) == ["energy_kwh", "facility_kwh", "co2_g", "duration_s", "reused", "task_key"]
    assert table.reused.dtype == bool and table.accuracy.dtype == table.params.dtype == np.float64
    assert {table[c].dtype for c in ("stage", "op", "status", "task_key")} == {np.dtype(object)}
    assert all(isinstance(v, str) for c in ("stage", "op", "status") for v in table[c])
    summary = table.groupby("stage").agg(accuracy=("accuracy", "mean"), energy_kwh=("energy_kwh", "sum"))  # README
    assert summary.loc["kd", "accuracy"] == pytest.approx(0.92)
    assert summary.loc["kd", "energy_kwh"] == pytest.approx(6e-6)  # the pending task's NaN skipped


def test_the_same_table_from_the_store_and_from_one_stage(kd_tree, tmp_path):
    save_results(kd_tree, tmp_path)
    table = to_dataframe(kd_tree)
    pd.testing.assert_frame_equal(to_dataframe(tmp_path), table)
    pd.testing.assert_frame_equal(compressflow.to_dataframe(str(tmp_path / "results.zarr")), table)
    kd = to_dataframe(compressflow.open_results(tmp_path)["kd"])  # a stage's node: its rows only
    assert list(kd.task_key) == ["distill-8", "distill-2", "distill-4"]


def test_study_summaries_are_not_rows_and_a_tree_without_its_spec_still_reads(kd_tree, monkeypatch):
    look_alike = xr.Dataset({"accuracy": 1.0, "task_key": "distill-8"}, attrs={"op": "distill"})
    monkeypatch.setitem(SUMMARIES._items, "look_alike", lambda spec, groups: {"/kd_comparison": look_alike})
    graph = study({"kd": ("distill", {"temperature": [8, 2]}, [("distill-8", {"temperature": 8}, classification(0.9)),
                                                             ("distill-2", {"temperature": 2}, classification(0.8))])})
    assert "kd_comparison" in graph.children and list(to_dataframe(graph).task_key) == ["distill-8", "distill-2"]
    bare = kd_tree.copy(deep=True)
    del bare.attrs["spec"]  # e.g. a tree assembled by hand: its stage groups, in the group's order
    assert list(to_dataframe(bare).task_key) == ["train-t", "distill-2", "distill-4", "distill-8"]


def test_a_search_stage_has_a_row_per_trial_with_its_parameters_and_total_cost():
    search, ran = simulate(search_spec(strategy="successive_halving", trials=9, budget=BUDGET))
    tasks = {}
    for node, epochs in ran:
        metrics = xr.Dataset({"val_accuracy": known_accuracy(node.params["x"], node.params["shape"], epochs)})
        tasks[node.key] = LedgerEntry(node.key, "s", "objective", node.point, status="ok", start=0.0, end=1.0,
                                      energy={"energy_kwh": 1e-3 * epochs}, record=Record(metrics))
    tree = build_results(search.spec, {"s": [t.latest for t in search.trials]}, tasks, searches=[search])
    table = to_dataframe(tree)
    assert len(table) == 9 and list(table.trial) == list(range(9))
    assert list(table.columns[:6]) == ["stage", "op", "trial", "x", "shape", "status"]
    assert list(table.x) == [t.params["x"] for t in search.trials]
    assert list(table["shape"]) == [t.params["shape"] for t in search.trials]
    assert list(table.status) == [t.status for t in search.trials] and sorted(table.status) == ["ok"] + ["pruned"] * 8
    assert list(table.budget) == [max(t.rungs) for t in search.trials]
    assert list(table.val_accuracy) == [t.rungs[max(t.rungs)] for t in search.trials]
    # a trial costs all its rungs' tasks: 1, 1 + 3 or 1 + 3 + 9 epochs at 1e-3 kWh each
    np.testing.assert_allclose(table.energy_kwh, [1e-3 * sum(n.budget or 9 for n in t.nodes) for t in search.trials])
    np.testing.assert_array_equal(table.duration_s, [len(t.nodes) for t in search.trials])
    assert list(table.task_key) == [t.latest.key for t in search.trials]
    assert not any(c.startswith("search_") or c.endswith("_by_rung") for c in table.columns)  # totals, per-rung


def test_detection_blockwise_and_shared_tasks_fill_the_union_of_columns():
    def detection(m):
        return xr.Dataset({"map_50": m, "map_50_95": m / 2, "val_map_50": m - 0.1, "op": 7.0,
                           "map_50_per_class": ("class", [m, m]), "train_loss": ("epoch", [1.0, 0.5])})

    def block(drop):
        return xr.Dataset({"accuracy_drop": drop, "block_mse_curve": ("epoch", [0.3, 0.2])})

    tree = study({
        "det": ("distill_detection", {"seed": [1, 0]}, [("det-1", {"seed": 1}, detection(0.6)),
                                                        ("det-0", {"seed": 0}, detection(0.5))]),
        # a layer × seed grid; the second layer's seed-1 task failed before it recorded anything
        "blocks": ("replace_layer", {"layer": ["fc", "conv1"], "seed": [0, 1]},
                   [("b-fc-0", {"layer": "fc", "seed": 0}, block(0.01)), ("b-fc-1", {"layer": "fc", "seed": 1}, block(0.02)),
                    ("b-c-0", {"layer": "conv1", "seed": 0}, block(0.03)), ("b-c-1", {"layer": "conv1", "seed": 1}, None)]),
        # two sweep points that are one task (the op ignores the swept value): one row each, one key
        "probe": ("capture", {"label": ["a", "b"]}, [("cap", {"label": "a"}, xr.Dataset({"probe_size": 64, "kept": True})),
                                                    ("cap", {"label": "b"}, xr.Dataset({"probe_size": 64, "kept": True}))]),
        # a structured sweep value labels its axis by JSON text; the rows keep the spec's order
        "mixed": ("distill", {"temperature": [{"stochastic": [2, 20]}, 4]},
                  [("m-s", {"temperature": {"stochastic": [2, 20]}}, classification(0.8)),
                   ("m-4", {"temperature": 4}, classification(0.7))]),
    })
    table = to_dataframe(tree)
    mixed = table[table.stage == "mixed"]
    assert list(mixed.temperature) == ['{"stochastic": [2, 20]}', "4"] and list(mixed.accuracy) == [0.8, 0.7]
    table = table[table.stage != "mixed"]
    assert list(table.stage) == ["det"] * 2 + ["blocks"] * 4 + ["probe"] * 2
    assert list(table.columns[:7]) == ["stage", "op", "seed", "layer", "label", "temperature", "status"]
    np.testing.assert_array_equal(table.seed, [1, 0, 0, 1, 0, 1, np.nan, np.nan])
    assert list(table.layer) == [None, None, "fc", "fc", "conv1", "conv1", None, None]
    np.testing.assert_array_equal(table.map_50, [0.6, 0.5] + [np.nan] * 6)
    np.testing.assert_array_equal(table.val_map_50, [0.5, 0.4] + [np.nan] * 6)
    np.testing.assert_array_equal(table.accuracy_drop, [np.nan] * 2 + [0.01, 0.02, 0.03, np.nan] + [np.nan] * 2)
    assert list(table.status[2:6]) == ["ok", "ok", "ok", "pending"]
    assert list(table.op) == ["distill_detection"] * 2 + ["replace_layer"] * 4 + ["capture"] * 2
    np.testing.assert_array_equal(table.op_recorded, [7.0, 7.0] + [np.nan] * 6)  # a recorded "op" kept beside ours
    assert "map_50_per_class" not in table and "block_mse_curve" not in table
    shared = table[table.stage == "probe"]
    assert list(shared.label) == ["a", "b"] and list(shared.task_key) == ["cap", "cap"]
    assert table.kept.dtype == "boolean" and list(shared.kept) == [True, True] and table.kept.isna().sum() == 6
    assert list(shared.energy_kwh) == [6e-6, 6e-6]  # the one task's, in both rows
    assert len(table.drop_duplicates("task_key")) == 7  # the README's advice: each task's energy once


def test_bad_input_is_one_line_naming_what_to_pass(kd_tree):
    with pytest.raises(InputError, match=r"^to_dataframe: results must be .* not Dataset \(pass the tree itself"):
        to_dataframe(kd_tree["kd"].to_dataset())
    with pytest.raises(InputError, match=r"^to_dataframe: the tree has no /tasks ledger.*groups: \['kd', 'teacher'\]"):
        to_dataframe(xr.DataTree.from_dict({k: kd_tree[k].to_dataset() for k in ("kd", "teacher")}))
    with pytest.raises(FileNotFoundError, match="no results at"):
        to_dataframe("no/such/run")
    empty = study({"s": ("wait", {}, [])})  # a search stage before its first trial: no rows yet
    assert len(to_dataframe(empty)) == 0 and list(to_dataframe(empty).columns)[:3] == ["stage", "op", "status"]


def test_a_metric_named_like_another_stages_sweep_axis_is_kept_apart():
    """An unswept prune records its achieved ``sparsity``; beside a stage that sweeps the target
    ``sparsity`` the one column would mix targets with achieved values."""
    tree = study({
        "swept": ("prune", {"sparsity": [0.5, 0.9]},
                  [("p-5", {"sparsity": 0.5}, xr.Dataset({"accuracy": 0.9, "sparsity": 0.49})),
                   ("p-9", {"sparsity": 0.9}, xr.Dataset({"accuracy": 0.8, "sparsity": 0.88}))]),
        "one": ("prune", {}, [("p-7", {}, xr.Dataset({"accuracy": 0.85, "sparsity": 0.69}))]),
    })
    table = to_dataframe(tree)
    np.testing.assert_array_equal(table.sparsity, [0.5, 0.9, np.nan])  # targets only
    np.testing.assert_array_equal(table.sparsity_recorded, [0.49, 0.88, 0.69])  # achieved, every stage
