"""The CLI's commands that start no cluster: ``report`` without results, ``list`` (names, an op's
parameters with types, defaults and bounds, an unknown name), ``--version``, and SIGTERM
during ``run`` (exit 143)."""

import shutil

import pytest

from compressflow.cli import main
from compressflow.registries import MODELS, OPS


def test_report_without_results_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no results at" in capsys.readouterr().err
    shutil.rmtree(tmp_path)


def _table(out: str) -> dict[str, list[str]]:
    """``list OP``'s rows by parameter name: [type, default, allowed]."""
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:4] == ["parameter", "type", "default", "allowed"])
    starts = [lines[header].index(col) for col in ("type", "default", "allowed")]
    rows = {}
    for line in lines[header + 1:]:
        if not line.strip():
            break
        cells = [line[:starts[0]], line[starts[0]:starts[1]], line[starts[1]:starts[2]], line[starts[2]:]]
        rows[cells[0].strip()] = [c.strip() for c in cells[1:]]
    return rows


def test_list_op_prints_its_parameters_with_types_defaults_and_bounds(capsys):
    assert main(["list", "train"]) == 0
    rows = _table(capsys.readouterr().out)
    assert rows["epochs"] == ["int", "10", ">= 1"]
    assert rows["model"] == ["str", "'resnet18'", f"one of: {', '.join(MODELS.list(task='classification'))}"]
    assert rows["width"] == ["float", "0.25", "> 0, <= 4"]
    assert rows["optimizer"] == ["'sgd' | 'adam' | 'adamw'", "'sgd'", ""]
    assert rows["milestones"][:2] == ["tuple[float, ...]", "(0.3, 0.6, 0.8)"]
    assert list(rows)[-1] == "seed" and rows["seed"][:2] == ["int", "0"]
    assert main(["list", "distill"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("distill: ") and "needs (upstream stages): teacher" in out
    assert main(["list", "evaluate"]) == 0
    assert "model" in capsys.readouterr().out


def test_list_distill_shows_the_losses_and_the_temperature_forms_and_cites_papers(capsys):
    assert main(["list", "distill"]) == 0
    out = capsys.readouterr().out
    rows = _table(out)
    assert rows["loss"] == ["str", "'hkd'", "one of: ce, cmc, dml, hkd"]
    assert rows["temperature"][:2] == ["float | {stochastic: [low, high]}", "4.0"]
    assert rows["temperature"][2].startswith("> 0, or stochastic: τ drawn per batch from the integers low..high")
    assert "Hinton et al. 2015" in out.splitlines()[0] and "ALGORITHMS" not in out


def test_no_op_listed_cites_a_file_outside_the_repository(capsys):
    for op in OPS.list():
        assert main(["list", op]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"{op}") and "ALGORITHMS" not in out, out.splitlines()[0]


def test_list_without_a_name_lists_names_and_unknown_op_exit_2(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("ops: ") and "train" in out[0].split(": ")[1].split(", ")
    assert [line.split(":")[0] for line in out] == ["ops", "models", "detection models", "datasets",
                                                    "detection datasets", "losses", "blocks"]
    assert out[2] == "detection models: ssd_vgg16, ssdlite_mobilenet_v3" and out[4] == "detection datasets: shapes, voc"
    assert "ssd_vgg16" not in out[1] and "shapes" not in out[3]
    assert main(["list", "trian"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("compressflow: error: list: unknown op 'trian' (did you mean 'train'?); valid choices: ")
    assert ", train, " in err + ", "
    assert len(err.splitlines()) == 1


def test_version(capsys):
    import compressflow

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"compressflow {compressflow.__version__}"


def test_sigterm_during_run_takes_the_ctrl_c_path_and_exits_143(monkeypatch, capsys):
    """``run`` turns SIGTERM into the first Ctrl-C (``KeyboardInterrupt`` where the study waits:
    cancel, grace period, write what finished) and exits 143; the previous handler is back after.
    The whole flow on a real run: tests/e2e/test_resume.py."""
    import os
    import signal
    import time

    import compressflow.cli as cli

    def study(args):
        assert signal.getsignal(signal.SIGTERM) is not sentinel  # the CLI's own while the study runs
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises in this thread at once
        pytest.fail("SIGTERM did not interrupt the run")

    def sentinel(signum, frame):  # pragma: no cover - never called
        raise AssertionError("the CLI's handler was not in place")

    monkeypatch.setattr(cli, "_run_study", study)
    previous = signal.signal(signal.SIGTERM, sentinel)
    try:
        assert main(["run", "spec.yaml"]) == 143
        assert signal.getsignal(signal.SIGTERM) is sentinel
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert capsys.readouterr().err.splitlines() == [
        "compressflow: terminated (SIGTERM); finished tasks are kept under the run directory's records/ and are "
        "reused when you run the same spec with the same --out"]
