import copy

from compressflow.engine.graph import build_graph
from compressflow.engine.spec import load_spec
from conftest import tiny_spec


def keys(spec):
    return [n.key for nodes in build_graph(load_spec(spec), "/tmp/out").stages.values() for n in nodes]


def test_same_spec_same_keys_and_op_prefix():
    a, b = keys(tiny_spec()), keys(copy.deepcopy(tiny_spec()))
    assert a == b
    assert a[0].startswith("train-") and a[1].startswith("evaluate-")


def test_changed_param_changes_its_key_and_downstream():
    base = keys(tiny_spec())
    spec = tiny_spec()
    spec["stages"]["teacher"]["params"]["epochs"] = 2
    changed = keys(spec)
    assert changed[0] != base[0] and changed[1] != base[1]


def test_changed_data_changes_keys():
    spec = tiny_spec()
    spec["data"]["seed"] = 1
    assert keys(spec)[0] != keys(tiny_spec())[0]


def test_default_written_out_gives_same_key():
    spec = tiny_spec()
    spec["stages"]["teacher"]["params"]["momentum"] = 0.9  # the default
    assert keys(spec) == keys(tiny_spec())


def test_sweep_expands_and_aligns_shared_axes():
    spec = tiny_spec(sweep={"seed": [0, 1], "lr": [0.1, 0.05]})
    spec["stages"]["student"] = {"op": "train", "params": {"epochs": 1}, "sweep": {"seed": [0, 1]}}
    spec["stages"]["test"]["sweep"] = {}
    graph = build_graph(load_spec(spec), "/tmp/out")
    assert len(graph.stages["teacher"]) == 4
    assert len({n.key for n in graph.stages["teacher"]}) == 4
    # evaluate inherits the teacher's axes: one task per teacher point
    assert graph.axes("test") == ["seed", "lr"]
    assert len(graph.stages["test"]) == 4
    assert len(graph.stages["student"]) == 2


def test_needs_with_shared_axis_pairs_not_crosses():
    spec = tiny_spec(sweep={"seed": [0, 1]})
    spec["stages"]["test"] = {"op": "evaluate", "needs": {"model": "teacher"}, "sweep": {"split": ["test", "val"]}}
    graph = build_graph(load_spec(spec), "/tmp/out")
    pts = [n.point for n in graph.stages["test"]]
    assert len(pts) == 4 and {(p["seed"], p["split"]) for p in pts} == {(0, "test"), (0, "val"), (1, "test"), (1, "val")}
    by_seed = {n.point["seed"]: n.key for n in graph.stages["teacher"]}
    for n in graph.stages["test"]:
        assert n.needs["model"] == by_seed[n.point["seed"]]


def test_identical_stages_share_one_task():
    spec = tiny_spec()
    spec["stages"]["teacher2"] = copy.deepcopy(spec["stages"]["teacher"])
    graph = build_graph(load_spec(spec), "/tmp/out")
    assert graph.stages["teacher"][0].key == graph.stages["teacher2"][0].key
    assert len(graph.delayed) == 2
