"""Spec validation: every bad input is one line naming the field, the bad value and the
valid choices, and the CLI exits 2 without a traceback."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from compressflow import SpecError, load_spec
from compressflow.cli import main
from compressflow.graph import build_graph
from conftest import tiny_spec


def _errors(capsys) -> str:
    """stderr without spec-warning lines (a short tiny schedule warns before the error line)."""
    return "\n".join(l for l in capsys.readouterr().err.strip().splitlines() if not l.startswith("compressflow: warning: "))

def _set(path, value):
    def mutate(spec):
        node = spec
        *parents, last = path
        for p in parents:
            node = node.setdefault(p, {})
        if value is DELETE:
            node.pop(last)
        else:
            node[last] = value
        return spec

    return mutate


DELETE = object()

BAD = [
    ("unknown top-level key", _set(["nmae"], "x"), r"^nmae: unknown key 'nmae'; valid keys: name, data, energy, stages$"),
    ("missing name", _set(["name"], DELETE), r"^name: required field is missing$"),
    ("unknown op", _set(["stages", "teacher", "op"], "trian"), r"^stages\.teacher\.op: unknown op 'trian'; valid choices: .*evaluate.*train"),
    ("unknown model", _set(["stages", "teacher", "params", "model"], "resnet19"),
     r"^stages\.teacher\.params\.model: unknown model 'resnet19'; valid choices: .*resnet18"),
    ("unknown param", _set(["stages", "teacher", "params", "epochz"], 3),
     r"^stages\.teacher\.params\.epochz: op 'train' has no parameter 'epochz'; valid: model, width, epochs"),
    ("wrong type", _set(["stages", "teacher", "params", "epochs"], "many"),
     r"^stages\.teacher\.params\.epochs: .*integer.* \(got 'many'\)$"),
    ("out of range", _set(["stages", "teacher", "params", "width"], -1),
     r"^stages\.teacher\.params\.width: .*greater than 0 \(got -1\)$"),
    ("unknown dataset", _set(["data", "dataset"], "mnist"),
     r"^data\.dataset: unknown dataset 'mnist'; valid choices: cifar10, cifar100, digits, synthetic, tinyimagenet$"),
    ("bad channels", _set(["data", "channels"], 2), r"^data\.channels: channels must be 1 or 3, got 2 \(got 2\)$"),
    ("unknown country", _set(["energy", "country"], "XYZ"), r"^energy\.country: .*'XYZ'"),
    ("pue below 1", _set(["energy", "pue"], 0.5), r"^energy\.pue: .*greater than or equal to 1 \(got 0\.5\)$"),
    ("empty sweep", _set(["stages", "teacher", "sweep"], {"seed": []}),
     r"^stages\.teacher\.sweep\.seed: the sweep is empty; give at least one value$"),
    ("sweep of unknown param", _set(["stages", "teacher", "sweep"], {"temperature": [2, 4]}),
     r"^stages\.teacher\.sweep\.temperature: op 'train' has no parameter 'temperature'; valid: model"),
    ("bad value inside a sweep", _set(["stages", "teacher", "sweep"], {"momentum": [0.9, 1.5]}),
     r"^stages\.teacher\.sweep\.momentum: .*less than 1 \(got 1\.5\)$"),
    ("param both fixed and swept", _set(["stages", "teacher", "sweep"], {"epochs": [1, 2]}),
     r"^stages\.teacher\.sweep\.epochs: 'epochs' is both in params and in sweep; keep one$"),
    ("needs a missing stage", _set(["stages", "test", "needs"], {"model": "teachr"}),
     r"^stages\.test\.needs\.model: no stage named 'teachr'; stages are: teacher, test$"),
    ("needs an unknown input", _set(["stages", "test", "needs"], {"modle": "teacher"}),
     r"^stages\.test\.needs\.modle: op 'evaluate' has no input 'modle'; valid inputs: model$"),
    ("required input missing", _set(["stages", "test", "needs"], {}),
     r"^stages\.test\.needs: op 'evaluate' needs an upstream stage for 'model'"),
    ("stages empty", _set(["stages"], {}), r"^stages: .*at least 1 item"),
    ("bad stage name type", _set(["stages", "teacher"], "train"), r"^stages\.teacher: .*(dictionary|StageSpec)"),
    ("resources must be positive", _set(["stages", "teacher", "resources"], {"GPU": 0}),
     r"^stages\.teacher\.resources\.GPU: must be > 0 \(got 0\.0\)$"),
]


@pytest.mark.parametrize("case, mutate, pattern", BAD, ids=[b[0] for b in BAD])
def test_bad_spec_one_line_message(case, mutate, pattern):
    spec = mutate(copy.deepcopy(tiny_spec()))
    with pytest.raises(SpecError) as err:
        load_spec(spec)
    msg = str(err.value)
    assert "\n" not in msg
    assert __import__("re").search(pattern, msg), msg


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


def test_yaml_cannot_run_code(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo pwned']\nstages: {}\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(evil)


def test_valid_spec_fills_defaults():
    spec = load_spec(tiny_spec())
    assert spec.order() == ["teacher", "test"]
    assert spec.data.val_fraction == 0.15 and spec.energy.pue == 1.0


def test_cli_exit_2_and_one_line(tmp_path, capsys):
    spec = tiny_spec()
    spec["stages"]["teacher"]["params"]["model"] = "resnet19"
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier work")
    assert main(["run", str(path), "--out", str(out)]) == 2
    err = _errors(capsys)
    assert err.startswith("compressflow: error: stages.teacher.params.model: unknown model 'resnet19'")
    assert len(err.splitlines()) == 1
    assert (out / "keep.txt").read_text() == "earlier work"  # nothing computed is deleted


def test_cli_subprocess_no_traceback(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: x\nstages: {t: {op: distil}}\n")
    proc = subprocess.run([sys.executable, "-m", "compressflow.cli", "run", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("compressflow: error: stages.t.op: unknown op 'distil'; valid choices:")


def test_missing_dataset_directory_exit_2_before_any_task(tmp_path, capsys):
    spec = tiny_spec()
    spec["data"] = {"dataset": "cifar10", "root": str(tmp_path / "nowhere")}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out)]) == 2
    err = _errors(capsys)
    assert err.startswith("compressflow: error: cifar10: ") and "data_batch_1..5" in err
    assert len(err.splitlines()) == 1
    assert not (out / "records").exists()


def _distill_spec(**params):
    spec = tiny_spec()
    spec["stages"]["kd"] = {"op": "distill", "needs": {"teacher": "teacher"}, "params": params}
    return spec


@pytest.mark.parametrize(
    "params, pattern",
    [
        ({"loss": "kld"}, r"^stages\.kd\.params\.loss: unknown loss 'kld'; valid choices: ce, cmc, dml, hkd$"),
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
    assert __import__("re").search(pattern, str(err.value)), str(err.value)


def test_distill_needs_missing_stage_and_bad_tau_in_sweep():
    spec = _distill_spec()
    spec["stages"]["kd"]["needs"] = {"teacher": "techer"}
    with pytest.raises(SpecError, match=r"^stages\.kd\.needs\.teacher: no stage named 'techer'; stages are: teacher, test, kd$"):
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


TASKS = Path(__file__).resolve().parents[1] / "tasks"
# every study the project ships, with its task count (train/distill/... tasks after sweeps)
SHIPPED_TASKS = {"quickstart": 2, "stkd": 100, "stkd_dml_long": 13, "stkd_dml_tau2": 34, "blockwise": 40,
                 "pruning": 183}


@pytest.mark.parametrize("name", sorted(SHIPPED_TASKS))
def test_shipped_task_files_validate_and_expand(name, tmp_path):
    path = TASKS / f"{name}.yaml"
    graph = build_graph(load_spec(path), tmp_path)
    assert len(graph.nodes) == SHIPPED_TASKS[name]


def test_every_shipped_task_file_is_checked():
    shipped = {p.stem for p in TASKS.glob("*.yaml")}
    assert shipped == set(SHIPPED_TASKS)
