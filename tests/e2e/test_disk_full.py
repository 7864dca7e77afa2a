"""``compressflow run`` on a full disk (a real small filesystem, ``tests.support.disk``; skipped
where mounting is not permitted): one line naming the device and the file, exit 2, no
traceback; the previous results store and the finished tasks' records survive, and the next
run with space reuses them."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

import compressflow
from compressflow.cli import main
from tests.support.disk import fill

SPEC = {"name": "full", "stages": {"w": {"op": "wait", "params": {"seconds": 0.1}, "sweep": {"label": [0, 1]}}}}


def _line(disk, path) -> str:
    return (f"compressflow: error: no space left on '{disk}' while writing '{path}'; finished tasks are kept; "
            f"free space and run again")


def test_no_byte_free_is_one_line_and_exit_2(small_disk):
    fill(small_disk)
    out, spec = small_disk / "run", small_disk.parent / "spec.yaml"  # the spec beside the small disk
    spec.write_text(yaml.safe_dump(SPEC))
    proc = subprocess.run([sys.executable, "-m", "compressflow", "run", str(spec), "--out", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [_line(small_disk, out / ".lock")]  # refused before a cluster starts


@pytest.mark.slow
def test_results_that_do_not_fit_keep_the_old_store_and_the_records_and_a_run_with_space_resumes(
        small_disk, client, capsys):
    out, spec = small_disk / "run", small_disk.parent / "spec.yaml"

    def run(pipeline: dict) -> tuple[int, str, str]:  # as `compressflow run` (in this process: seconds faster)
        spec.write_text(yaml.safe_dump(pipeline))
        code = main(["run", str(spec), "--out", str(out), "--quiet", "--cluster", client.scheduler.address])
        return code, *capsys.readouterr()

    assert run(SPEC)[0] == 0
    before = compressflow.open_results(out)
    records = {p.name: p.read_bytes() for p in (out / "records").iterdir()}
    assert len(records) == 2
    space = fill(small_disk)
    changed = {**SPEC, "energy": {"pue": 1.5}}  # the same tasks; the results (their CO2) change
    code, stdout, stderr = run(changed)
    assert code == 2, stderr
    assert stderr.splitlines() == [_line(small_disk, out / "results.zarr")]  # one line, no traceback
    assert "tasks: reused 2, ran 0" in stdout.splitlines()  # what finished is shown, though not written
    assert compressflow.open_results(out).identical(before)
    assert {p.name: p.read_bytes() for p in (out / "records").iterdir()} == records
    space.unlink()
    code, stdout, stderr = run(changed)
    assert code == 0, stderr
    assert "tasks: reused 2, ran 0" in stdout.splitlines()
    co2 = compressflow.open_results(out)["tasks"]["co2_g"].values
    assert co2 == pytest.approx(1.5 * before["tasks"]["co2_g"].values)
