"""Spec validation: every bad input is one line naming the field, the bad value and the valid
choices; defaults filled, shipped task files validate and their task counts match the graph,
YAML cannot run code or expand an alias bomb."""

import re
import tracemalloc

import pytest

from compressflow import SpecError, load_spec
from compressflow.engine.graph import build_graph
from compressflow.spec import MAX_TASKS, MAX_YAML_NODES, task_counts
from tests.support import ROOT, tiny_spec
from tests.support.special_files import SPECIAL, make_special, promptly


def test_dependency_cycle(tmp_path):
    spec = tiny_spec()
    spec["stages"]["a"] = {"op": "evaluate", "needs": {"model": "b"}}
    spec["stages"]["b"] = {"op": "evaluate", "needs": {"model": "a"}}
    with pytest.raises(SpecError, match=r"^stages: dependency cycle .*(a -> b|b -> a)"):
        load_spec(spec)


def test_malformed_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstages: {teacher: {op: train\n")
    with pytest.raises(SpecError, match=r"is not valid YAML at line \d+, column \d+"):
        load_spec(bad)
    with pytest.raises(SpecError, match=r"^spec: file '.*nope\.yaml' does not exist$"):
        load_spec(tmp_path / "nope.yaml")


@pytest.mark.parametrize("kind", list(SPECIAL))
def test_a_spec_that_is_not_a_regular_file_is_refused_at_once(tmp_path, kind):
    """A FIFO would block the read, a link to /dev/zero would read without end."""
    path = make_special(tmp_path / "spec.yaml", kind)
    with pytest.raises(SpecError) as info:
        promptly(lambda: load_spec(path))
    assert str(info.value) == f"spec: {str(path)!r} is {SPECIAL[kind]}, not a regular file; a spec is a small YAML file"


def test_yaml_cannot_run_code(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo pwned']\nstages: {}\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(evil)


def test_valid_spec_fills_defaults():
    spec = load_spec(tiny_spec())
    assert spec.order() == ["teacher", "test"]
    assert spec.data.val_fraction == 0.15 and spec.energy.pue == 1.0


def _distill_spec(**params):
    spec = tiny_spec()
    spec["stages"]["kd"] = {"op": "distill", "needs": {"teacher": "teacher"}, "params": params}
    return spec


@pytest.mark.parametrize(
    "params, pattern",
    [
        ({"loss": "kld"}, r"^stages\.kd\.params\.loss: unknown loss 'kld' \(did you mean 'hkd'\?\); valid choices: ce, cmc, dml, hkd$"),
        ({"temperature": 0}, r"^stages\.kd\.params\.temperature: temperature must be > 0 \(got 0\)$"),
        ({"temperature": -3}, r"^stages\.kd\.params\.temperature: temperature must be > 0 \(got -3\)$"),
        ({"temperature": {"stochastic": [20, 2]}},
         r"^stages\.kd\.params\.temperature: the stochastic temperature range is empty, inverted or below 1; .*\(got \{'stochastic': \[20, 2\]\}\)$"),
        ({"temperature": {"stochastic": []}},
         r"^stages\.kd\.params\.temperature: temperature must be a number > 0 or \{stochastic: \[low, high\]\}"),
        ({"alpha": 1.2}, r"^stages\.kd\.params\.alpha: Input should be less than or equal to 1 \(got 1\.2\)$"),
        ({"alpha": -0.1}, r"^stages\.kd\.params\.alpha: Input should be greater than or equal to 0 \(got -0\.1\)$"),
    ],
)
def test_bad_distill_params(params, pattern):
    with pytest.raises(SpecError) as err:
        load_spec(_distill_spec(**params))
    assert re.search(pattern, str(err.value)), str(err.value)


def test_distill_needs_missing_stage_and_bad_tau_in_sweep():
    spec = _distill_spec()
    spec["stages"]["kd"]["needs"] = {"teacher": "techer"}
    with pytest.raises(SpecError, match=r"^stages\.kd\.needs\.teacher: no stage named 'techer' \(did you mean 'teacher'\?\); "
                                        r"stages are: teacher, test, kd$"):
        load_spec(spec)
    spec = _distill_spec()
    spec["stages"]["kd"]["sweep"] = {"temperature": [2, 4, -1]}
    with pytest.raises(SpecError, match=r"^stages\.kd\.sweep\.temperature: temperature must be > 0 \(got -1\)$"):
        load_spec(spec)


def test_required_param_may_come_from_the_sweep_or_is_named():
    spec = tiny_spec()
    spec["stages"]["cache"] = {"op": "activations", "needs": {"model": "teacher"}}
    spec["stages"]["blocks"] = {"op": "replace_layer", "needs": {"teacher": "teacher", "activations": "cache"},
                                "sweep": {"layer": ["conv1", "layer1.0.conv1"]}}
    assert load_spec(spec).stages["blocks"].sweep["layer"] == ["conv1", "layer1.0.conv1"]
    spec["stages"]["blocks"]["sweep"] = {}
    with pytest.raises(SpecError, match=r"^stages\.blocks\.params\.layer: op 'replace_layer' requires 'layer'; set it in params or sweep$"):
        load_spec(spec)

TASKS = ROOT / "tasks"

# every study the project ships, with its task count (train/distill/... tasks after sweeps)
SHIPPED_TASKS = {"quickstart": 2, "stkd_datafree": 18, "stkd": 112, "stkd_dml_long": 13, "stkd_dml_tau2": 34, "stkd_search": 67, "stkd_pairs": 93, "stkd_qat": 16, "blockwise": 40,
                 "pruning": 183, "stkd_detection": 7}


@pytest.mark.parametrize("name", sorted(SHIPPED_TASKS))
def test_shipped_task_files_validate_and_expand(name, tmp_path):
    path = TASKS / f"{name}.yaml"
    graph = build_graph(load_spec(path), tmp_path)
    assert len(graph.nodes) == SHIPPED_TASKS[name]


def test_every_shipped_task_file_is_checked():
    shipped = {p.stem for p in TASKS.glob("*.yaml")}
    assert shipped == set(SHIPPED_TASKS)


def test_task_counts_agree_with_the_graph_per_stage(tmp_path):
    """The count that guards the sweep limit is the graph's own, stage by stage, without
    building it: checked on every shipped study and on aligned sweep axes."""
    for path in sorted(TASKS.glob("*.yaml")):
        spec = load_spec(path)
        graph = build_graph(spec, tmp_path)
        counts = task_counts(spec)
        static = {name for name, st in spec.stages.items() if st.search is None}  # a search counts its upper bound
        assert {n: counts[n] for n in static} == {n: len(graph.stages[n]) for n in static}, path.name
    aligned = _distill_spec()
    aligned["stages"]["teacher"]["sweep"] = {"seed": [0, 1, 2]}
    aligned["stages"]["kd"]["sweep"] = {"seed": [0, 1, 2], "temperature": [2, 4, 8, 16]}
    # 3 teachers; the students align on seed (3, not 3 × 3) and cross temperature (× 4)
    assert task_counts(load_spec(aligned)) == {"teacher": 3, "test": 3, "kd": 12}


def _seed_sweep(n):
    spec = tiny_spec()
    spec["stages"]["teacher"]["sweep"] = {"seed": list(range(n))}
    return spec


def test_sweep_limit_is_exact_at_the_boundary():
    # n teachers and one evaluation of each: 2n tasks
    assert sum(task_counts(load_spec(_seed_sweep(MAX_TASKS // 2))).values()) == MAX_TASKS
    with pytest.raises(SpecError, match=rf"^stages: the sweeps expand to {MAX_TASKS + 2:,} tasks "
                                        rf"\(teacher: {MAX_TASKS // 2 + 1:,}, test: {MAX_TASKS // 2 + 1:,}\), "
                                        rf"more than the limit of {MAX_TASKS:,}; "):
        load_spec(_seed_sweep(MAX_TASKS // 2 + 1))


@pytest.mark.parametrize("name", ["teacher2", "_private", "kd-grid", "A_b-9", "t" * 64, "tasks_v2", "kd"])
def test_safe_stage_names_are_accepted(name):
    spec = tiny_spec()
    spec["stages"][name] = {"op": "evaluate", "needs": {"model": "teacher"}}
    assert name in load_spec(spec).stages


def _alias_bomb(levels):
    """A model name made of ``levels`` lists, each ten aliases of the one before: a few
    hundred bytes that expand to 10**levels strings."""
    items = ["&a0 [x, x, x, x, x, x, x, x, x, x]"]
    items += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return ("name: bomb\nstages:\n  t:\n    op: train\n    params:\n      model:\n"
            + "".join(f"        - {item}\n" for item in items))


@pytest.mark.parametrize("levels", [6, 9])
def test_alias_bomb_is_refused_without_expanding_it(levels, tmp_path):
    """Before, a bomb of a million strings took 18 s and its quoted value grew the error
    message to megabytes (a billion: gigabytes, then abort). Now the composer counts the
    expansion and stops at MAX_YAML_NODES, whatever the bomb's size."""
    path = tmp_path / "bomb.yaml"
    path.write_text(_alias_bomb(levels))
    assert path.stat().st_size < 1000
    tracemalloc.start()
    try:
        with pytest.raises(SpecError, match=rf"expands to more than {MAX_YAML_NODES:,} YAML nodes by line 11 "):
            load_spec(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20  # measured: 0.05 MiB; the expanded bomb is 10**levels strings


def test_strict_numbers_still_accept_what_a_spec_means():
    """No coercion, yet an integer is a float, a YAML list is a tuple, and a stochastic
    temperature is a pair of integers."""
    spec = _distill_spec(temperature={"stochastic": [2, 20]}, alpha=1, milestones=[0.5, 0.75])
    spec["stages"]["teacher"]["params"].update(width=1, lr=1, weight_decay=0, momentum=0, seed=2**63 - 1)
    spec["stages"]["teacher"]["sweep"] = {"warmup_epochs": [0, 1]}
    spec["stages"]["teacher"]["resources"] = {"GPU": 1}
    spec["stages"]["cache"] = {"op": "activations", "needs": {"model": "teacher"}, "params": {"layers": ["conv1"]}}
    spec["data"].update(val_fraction=0.25, augment=["flip", "crop"], seed=7)
    spec["energy"] = {"pue": 2, "country": "FRA"}
    parsed = load_spec(spec)
    teacher = parsed.stages["teacher"]
    assert teacher.params["lr"] == 1 and teacher.params["seed"] == 2**63 - 1
    assert teacher.resources == {"GPU": 1.0} and parsed.energy.pue == 2.0
    assert parsed.data.augment == ("flip", "crop")
    assert parsed.stages["kd"].params["temperature"] == {"stochastic": [2, 20]}
    assert task_counts(parsed) == {"teacher": 2, "test": 2, "kd": 2, "cache": 2}


def test_exponent_floats_load_as_numbers_and_quoted_ones_stay_strings(tmp_path):
    """YAML 1.2 floats: ``1e-3`` is 0.001 (PyYAML's YAML 1.1 resolver alone reads it as a
    string); quoting keeps a string; the global SafeLoader is left as it was."""
    import yaml

    path = tmp_path / "spec.yaml"
    path.write_text("name: x\nstages:\n  t: {op: train, params: {lr: 1e-3, weight_decay: -2.5e-4}, "
                    "sweep: {warmup_epochs: [1, 2]}}\n  w: {op: wait, params: {seconds: 5E-1}}\n")
    with pytest.raises(SpecError, match=r"weight_decay: Input should be greater than or equal to 0 \(got -0\.00025\)"):
        load_spec(path)
    path.write_text(path.read_text().replace("-2.5e-4", "2.5e-4"))
    spec = load_spec(path)
    assert spec.stages["t"].params["lr"] == 0.001 and spec.stages["t"].params["weight_decay"] == 0.00025
    assert spec.stages["w"].params["seconds"] == 0.5
    from compressflow.spec._yaml import read_yaml

    (tmp_path / "q.yaml").write_text("a: '1e-3'\nb: \"1E5\"\nc: 1E5\n")
    assert read_yaml(tmp_path / "q.yaml", field="spec", what="a spec") == {"a": "1e-3", "b": "1E5", "c": 100000.0}
    assert yaml.safe_load("a: 1e-3") == {"a": "1e-3"}  # PyYAML's own loader is not changed
