"""A schedule whose warm-up and milestones leave (almost) no epochs at the base learning rate
is valid but trains to chance: it is flagged at spec time with a SpecWarning naming the stage
and the epochs (the worst sweep point), counted by hand; the CLI prints it as one line."""

from __future__ import annotations

import copy
import sys
import warnings

import pytest

from compressflow import load_spec
from compressflow.errors import SpecWarning
from compressflow.ops.schedule import base_rate_epochs

BASE = {"name": "w", "data": {"dataset": "digits", "image_size": 8, "channels": 1}, "stages": {
    "teacher": {"op": "train", "params": {"model": "resnet18", "width": 0.125, "epochs": 15}},
    "student": {"op": "distill", "needs": {"teacher": "teacher"}, "params": {"epochs": 10}},
}}


def _spec(stage: str, **params):
    spec = copy.deepcopy(BASE)
    spec["stages"][stage]["params"].update(params)
    return spec


def _no_warning(spec):
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpecWarning)
        load_spec(spec)


def test_base_rate_epochs_by_hand():
    # warm-up ends at epoch 1; the first ×0.2 comes at 0.3 · epochs
    assert base_rate_epochs(2, 1.0, (0.3, 0.6, 0.8), 0.2) == 0.0  # first decay at 0.6, inside the warm-up
    assert base_rate_epochs(10, 1.0, (0.3, 0.6, 0.8), 0.2) == pytest.approx(2.0)
    assert base_rate_epochs(5, 0.0, (0.5,), 0.2) == pytest.approx(2.5)
    assert base_rate_epochs(3, 1.0, (0.3,), 1.0) == 2.0  # gamma 1: milestones change nothing
    assert base_rate_epochs(4, 0.5, (), 0.2) == 3.5


def test_two_epochs_warn_naming_the_stage_and_the_epochs():
    with pytest.warns(SpecWarning) as got:
        load_spec(_spec("student", epochs=2))
    (w,) = [x for x in got if issubclass(x.category, SpecWarning)]
    assert str(w.message) == (
        "stages.student: epochs 2 with warmup_epochs 1 and first milestone 0.3 (epoch 0.6) leave 0.0 epochs at the "
        "base learning rate (fewer than 2); the model may train to chance; raise epochs, shorten warmup_epochs or "
        "move the milestones later")


def test_the_worst_sweep_point_is_named():
    spec = _spec("teacher")
    del spec["stages"]["teacher"]["params"]["epochs"]
    spec["stages"]["teacher"]["sweep"] = {"epochs": [20, 5, 3]}
    with pytest.warns(SpecWarning, match=r"^stages\.teacher: epochs 3 .* leave 0\.0 epochs"):
        load_spec(spec)


def test_enough_epochs_or_fine_tuning_do_not_warn():
    _no_warning(BASE)  # 10 epochs: exactly 2 at the base rate
    _no_warning(_spec("student", epochs=3, warmup_epochs=0, milestones=[0.9]))  # 2.7 epochs
    # fine-tuning from trained weights is short on purpose: magnitude pruning, assemble
    spec = copy.deepcopy(BASE)
    spec["stages"]["pruned"] = {"op": "prune", "needs": {"model": "teacher"}, "params": {"epochs": 1}}
    _no_warning(spec)
    spec["stages"]["pruned"]["sweep"] = {"method": ["magnitude", "reinit"]}  # reinit trains from scratch
    with pytest.warns(SpecWarning, match=r"^stages\.pruned: epochs 1 "):
        load_spec(spec)


def test_the_cli_prints_one_warning_line(tmp_path, capsys):
    import yaml

    from compressflow.cli import main

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(_spec("student", epochs=2)))
    (tmp_path / "out").write_text("a file, so the run stops after the spec is read")
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.splitlines()
    warned = [line for line in err if line.startswith("compressflow: warning: ")]
    assert warned == ["compressflow: warning: stages.student: epochs 2 with warmup_epochs 1 and first milestone 0.3 "
                      "(epoch 0.6) leave 0.0 epochs at the base learning rate (fewer than 2); the model may train to "
                      "chance; raise epochs, shorten warmup_epochs or move the milestones later"]
    assert len([line for line in err if line.startswith("compressflow: error: ")]) == 1
    assert not any("SpecWarning" in line or "warnings.warn" in line for line in err)


def test_the_warning_points_at_the_stage_in_the_spec_not_at_compressflow(tmp_path):
    """Python shows a warning at its file and line with that line's source under it: the
    stage's line of the spec file (a mapping spec: the user's load_spec call), never the op
    check's code."""
    import yaml

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(_spec("student", epochs=2), sort_keys=False))
    line = path.read_text().splitlines().index("  student:") + 1
    with pytest.warns(SpecWarning) as got:
        load_spec(str(path))
    (w,) = [x for x in got if issubclass(x.category, SpecWarning)]
    assert (w.filename, w.lineno) == (str(path), line)
    shown = warnings.formatwarning(w.message, w.category, w.filename, w.lineno)
    assert shown.startswith(f"{path}:{line}: SpecWarning: stages.student: epochs 2 ")
    assert shown.endswith("\n  student:\n") and "check" not in shown.split("\n", 1)[1]
    here = sys._getframe().f_lineno + 2  # the load_spec line below
    with pytest.warns(SpecWarning) as got:
        load_spec(_spec("student", epochs=2))
    assert [(x.filename, x.lineno) for x in got if issubclass(x.category, SpecWarning)] == [(__file__, here)]
