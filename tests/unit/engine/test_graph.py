"""The task graph from a spec: keys stable and changed by what changes a task, sweeps expanded
with shared axes aligned (paired, not crossed), identical stages shared, renamed axes crossed."""

import copy

from compressflow.engine.graph import build_graph
from compressflow.spec import load_spec
from tests.support import tiny_spec


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


def _pairs_spec(rename: bool) -> dict:
    """Teachers swept over two models, a student stage over two models: aligned by default
    (same axis ``model``), crossed when the axes are renamed."""
    models = ["resnet18", "mobilenet_v2"]
    sweep = (lambda axis: {"model": {"as": axis, "values": models}}) if rename else (lambda axis: {"model": models})
    return {"name": "pairs", "data": {"dataset": "digits", "image_size": 8, "channels": 1}, "stages": {
        "teacher": {"op": "train", "params": {"width": 0.125, "epochs": 1}, "sweep": sweep("teacher_model")},
        "student": {"op": "distill", "needs": {"teacher": "teacher"}, "params": {"width": 0.125, "epochs": 1},
                    "sweep": {**sweep("student_model"), "seed": [0, 1]}}}}


def test_same_axis_aligns_teacher_and_student_models():
    graph = build_graph(load_spec(_pairs_spec(rename=False)), "/tmp/out")
    teacher_of = {n.key: n.params["model"] for n in graph.stages["teacher"]}
    students = graph.stages["student"]
    assert len(students) == 4 and graph.axes("student") == ["model", "seed"]
    assert all(teacher_of[n.needs["teacher"]] == n.params["model"] for n in students)  # pairs, not crosses


def test_renamed_axes_cross_teachers_with_students():
    spec = load_spec(_pairs_spec(rename=True))
    assert spec.stages["student"].sweep_as == {"model": "student_model"}
    graph = build_graph(spec, "/tmp/out")
    teacher_of = {n.key: n.params["model"] for n in graph.stages["teacher"]}
    students = graph.stages["student"]
    assert graph.axes("teacher") == ["teacher_model"] and graph.axes("student") == ["teacher_model", "student_model", "seed"]
    pairs = {(teacher_of[n.needs["teacher"]], n.params["model"], n.point["seed"]) for n in students}
    assert len(students) == 8 and len(pairs) == 8  # every teacher with every student, each seed
    for n in students:  # the point names the parameter's value under its new axis
        assert n.point["student_model"] == n.params["model"] and n.point["teacher_model"] == teacher_of[n.needs["teacher"]]
    # the renamed spelling is data: dumping and re-loading gives the same tasks
    again = build_graph(load_spec(spec.model_dump()), "/tmp/out")
    assert [n.key for n in again.stages["student"]] == [n.key for n in students]
    # a rename changes no key: the teacher swept as 'model' or as 'teacher_model' is the same task
    plain = build_graph(load_spec(_pairs_spec(rename=False)), "/tmp/out")
    assert {n.key for n in plain.stages["teacher"]} == set(teacher_of)


def test_two_submissions_of_one_spec_share_task_keys_but_not_dask_keys():
    from dask.utils import key_split

    from compressflow.engine.node import dask_key, task_of

    spec = load_spec(tiny_spec())
    a, b = (build_graph(spec, "/tmp/out", study=sid) for sid in ("0a1b2c3d4e5f", "abcdefabcdef"))
    assert list(a.delayed) == list(b.delayed)  # task keys: the records' names, reused across runs
    a_keys = [d.key for d in a.delayed.values()]
    b_keys = [d.key for d in b.delayed.values()]
    assert a_keys == [f"{k}-0a1b2c3d4e5f" for k in a.delayed] and not set(a_keys) & set(b_keys)
    assert [task_of(k, "0a1b2c3d4e5f") for k in a_keys] == list(a.delayed)  # back to the task key
    assert [task_of(k, "abcdefabcdef") for k in a_keys] == [None, None]  # not the other study's
    assert task_of("-0a1b2c3d4e5f", "0a1b2c3d4e5f") is None and task_of(("x", 1), "0a1b2c3d4e5f") is None
    assert [key_split(k) for k in b_keys] == ["train", "evaluate"]  # Dask's dashboard groups them by op
    teacher, test = b.delayed  # the downstream task depends on its own study's upstream task
    assert set(dict(b.delayed[test].dask)) == {dask_key(teacher, "abcdefabcdef"), dask_key(test, "abcdefabcdef")}
