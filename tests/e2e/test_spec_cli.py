"""Spec errors as users meet them: the CLI exits 2 with one line and no traceback (also in a
subprocess), before any task or cluster — a missing dataset folder, a huge sweep, a stage
name that would crash the results."""

import subprocess
import sys

import pytest
import yaml

import compressflow.api.study
from compressflow.cli import main
from tests.support import tiny_spec


def _errors(capsys) -> str:
    """stderr without spec-warning lines (a short tiny schedule warns before the error line)."""
    return "\n".join(l for l in capsys.readouterr().err.strip().splitlines() if not l.startswith("compressflow: warning: "))


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


@pytest.mark.slow
def test_cli_subprocess_no_traceback(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: x\nstages: {t: {op: distil}}\n")
    proc = subprocess.run([sys.executable, "-m", "compressflow.cli", "run", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith(
        "compressflow: error: stages.t.op: unknown op 'distil' (did you mean 'distill'?); valid choices:")


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


def _nothing_built(monkeypatch):
    """Make building the graph or starting a cluster fail the test: a refused spec must be
    refused by load_spec, before either."""
    started = []

    def forbidden(what):
        def fn(*args, **kwargs):
            started.append(what)
            raise AssertionError(f"{what} was called for a spec that must be refused at load")
        return fn

    monkeypatch.setattr(compressflow.api.study, "build_graph", forbidden("build_graph"))
    monkeypatch.setattr(compressflow.api.study, "connect", forbidden("connect"))
    return started


def test_huge_sweep_refused_with_its_size_before_the_graph_is_built(tmp_path, capsys, monkeypatch):
    started = _nothing_built(monkeypatch)
    spec = tiny_spec()
    # 1,000 × 1,000 = a million teachers, a million evaluations: counted, never enumerated
    spec["stages"]["teacher"]["sweep"] = {"seed": list(range(1000)), "lr": [(i + 1) / 1000 for i in range(1000)]}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = _errors(capsys)
    assert err == ("compressflow: error: stages: the sweeps expand to 2,000,000 tasks (teacher: 1,000,000, "
                           "test: 1,000,000), more than the limit of 10,000; sweep fewer values or split the study "
                           "into several specs")
    assert started == []


@pytest.mark.parametrize("name", ["a/b", "../../etc", "a\0b", "a\nb", "", ".", "x" * 300, "tasks", "kd_comparison"],
                         ids=["slash", "dotdot", "nul", "newline", "empty", "dot", "300-chars", "tasks", "summary"])
def test_stage_names_that_crashed_the_results_are_refused_before_any_cluster(name, tmp_path, capsys, monkeypatch):
    """These names used to train every task and then crash building the results (exit 1)."""
    started = _nothing_built(monkeypatch)
    spec = tiny_spec()
    spec["stages"][name] = {"op": "evaluate", "needs": {"model": "teacher"}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = _errors(capsys)
    assert len(err.splitlines()) == 1 and err.startswith("compressflow: error: stages")
    assert "rename the stage" in err or "use letters, digits, _ and -" in err
    assert started == [] and not (tmp_path / "out").exists()
