"""The CLI end to end: run with a cluster spec file, report, exit 1 on failed tasks (the rest
written), exit 2 on an unwritable output or unreadable cluster spec."""

import numpy as np
import pytest
import yaml

from compressflow.cli import main
from tests.support import tiny_spec


def _errors(capsys) -> str:
    """stderr without spec-warning lines (a short tiny schedule warns before the error line)."""
    return "\n".join(l for l in capsys.readouterr().err.strip().splitlines() if not l.startswith("compressflow: warning: "))


def write(tmp_path, spec, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow
def test_run_with_cluster_file_then_report(tmp_path, capsys):
    cluster = write(tmp_path, {"kind": "local", "n_workers": 1, "dashboard_address": ":0"}, "cluster.yaml")
    out = tmp_path / "run"
    assert main(["run", str(write(tmp_path, tiny_spec())), "--cluster", str(cluster), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split() == ["stage", "op", "tasks", "accuracy", "time_s", "kWh", "gCO2"]
    assert any(line.startswith("teacher") and " 1/1 " in line for line in printed.splitlines())
    assert (out / "results.zarr").is_dir()
    assert main(["report", str(out)]) == 0
    assert "evaluate" in capsys.readouterr().out


def test_failed_task_exit_1_rest_written(client, tmp_path, capsys):
    import compressflow

    out = tmp_path / "run"
    spec = tiny_spec()
    # a task that fails at run time: with the teacher's model swept, its layer names are only
    # known once the model exists, so the bad layer name gets past the spec check
    spec["stages"]["teacher"]["params"].pop("model")
    spec["stages"]["teacher"]["sweep"] = {"model": ["resnet18"]}
    spec["stages"]["probe"] = {"op": "capture", "needs": {"model": "teacher"}, "params": {"layers": ["nope"], "probe": 8}}
    addr = client.scheduler.address
    assert main(["run", str(write(tmp_path, spec)), "--cluster", addr, "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "of stage 'probe' failed: InputError: capture.layers: 'nope' is not a module of resnet18" in err
    tree = compressflow.open_results(out)
    status = dict(zip(tree["tasks"]["stage"].values, tree["tasks"]["status"].values))
    assert status == {"teacher": "ok", "test": "ok", "probe": "failed"}
    assert np.isfinite(tree["test"]["accuracy"].values).all()  # the independent task's result is written
    # a finished task's checkpoint torn since: its record is not reused (one warning), the torn
    # file and the record are kept under rejected/, and the task runs again
    ckpt = next((out / "artifacts").glob("train-*.pt"))
    ckpt.write_bytes(b"torn")
    assert main(["run", str(write(tmp_path, spec)), "--cluster", addr, "--out", str(out), "--quiet"]) == 1
    (warning,) = [line for line in capsys.readouterr().err.splitlines() if "warning: record" in line]
    assert warning.startswith("compressflow: warning: record ") and "does not match its recorded sha256" in warning
    (kept,) = (out / "rejected").iterdir()
    assert (kept / ckpt.name).read_bytes() == b"torn" and (kept / f"{kept.name}.json").is_file()
    assert ckpt.read_bytes() != b"torn"  # trained again
    tree = compressflow.open_results(out)
    assert dict(zip(tree["tasks"]["stage"].values, tree["tasks"]["status"].values))["teacher"] == "ok"


def test_unwritable_output_and_unreadable_cluster_spec_exit_2(tmp_path, capsys):
    spec = write(tmp_path, tiny_spec())
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert main(["run", str(spec), "--out", str(blocker / "run")]) == 2
    err = _errors(capsys)
    assert err.startswith("compressflow: error: --out: cannot write to") and "choose a writable directory" in err
    assert len(err.splitlines()) == 1
    assert main(["run", str(spec), "--cluster", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "r")]) == 2
    err = _errors(capsys)
    assert "--cluster: file " in err and "missing.yaml' does not exist" in err and len(err.splitlines()) == 1
    assert blocker.read_text() == "not a directory"  # nothing touched
