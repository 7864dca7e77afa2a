"""The CLI end to end: run with a cluster spec file, report, and exit 1 on failed tasks."""

import shutil

import yaml

from compressflow.cli import main
from conftest import tiny_spec


def write(tmp_path, spec, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


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
    compressflow.run(spec, cluster=client, out=out, show_progress=False)
    # corrupt the teacher's checkpoint and forget the evaluation: the re-run reuses the
    # teacher's record, and evaluate must fail on the hash check instead of using bad weights
    ckpt = next((out / "artifacts").glob("train-*.pt"))
    ckpt.write_bytes(b"torn")
    for rec in (out / "records").glob("evaluate-*.json"):
        rec.unlink()
    addr = client.scheduler.address
    assert main(["run", str(write(tmp_path, spec)), "--cluster", addr, "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "of stage 'test' failed: InputError: checkpoint" in err and "does not match its recorded sha256" in err
    tree = compressflow.open_results(out)
    status = dict(zip(tree["tasks"]["stage"].values, tree["tasks"]["status"].values))
    assert status == {"teacher": "ok", "test": "failed"}
    assert (out / "records").is_dir() and any((out / "records").glob("train-*.json"))


def test_report_without_results_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no results at" in capsys.readouterr().err
    shutil.rmtree(tmp_path)
