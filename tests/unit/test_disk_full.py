"""A full disk under the run directory is one line (``DiskFull``, exit 2 in the CLI) naming the
device and the file, wherever the client writes: the run lock, the results store (the previous
store stays), the report. On a real small filesystem (``tests.support.disk``: a tmpfs, skipped
where mounting is not permitted); tasks: tests/unit/engine/test_execute.py; the CLI end to end:
tests/e2e/test_disk_full.py."""

from __future__ import annotations

import errno

import pytest

from compressflow.cli import main
from compressflow.errors import DiskFull, disk_full
from compressflow.results import open_results, save_results
from compressflow.rundir import RunDir
from tests.support.disk import fill
from tests.unit.report.synthetic import results_tree


def line(disk, path) -> str:
    return f"no space left on '{disk}' while writing '{path}'; finished tasks are kept; free space and run again"


def test_the_line_names_the_mount_point_and_the_file(small_disk):
    fill(small_disk)
    with pytest.raises(OSError) as caught, open(small_disk / "sub.txt", "w") as fh:
        fh.write("x")
    assert str(disk_full(caught.value, small_disk / "sub.txt")) == line(small_disk, small_disk / "sub.txt")
    wrapped = RuntimeError("the library's own words")  # a library that wraps the OSError (zarr, torch)
    wrapped.__cause__ = caught.value
    assert str(disk_full(wrapped, small_disk / "x")) == line(small_disk, small_disk / "x")
    quota = disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"), small_disk / "q")
    assert str(quota).startswith(f"disk quota exceeded on '{small_disk}' while writing '{small_disk}/q'; ")
    assert disk_full(PermissionError(errno.EACCES, "Permission denied"), small_disk) is None


def test_the_run_lock_on_a_full_disk_is_one_error_not_a_chain(small_disk):
    run = RunDir(small_disk / "run")
    run.root.mkdir()  # a directory takes no space on a tmpfs; the lock's line does
    fill(small_disk)
    with pytest.raises(DiskFull) as caught, run.lock():
        pytest.fail("the lock was taken on a full disk")
    assert str(caught.value) == line(small_disk, run.root / ".lock")
    assert caught.value.__suppress_context__ and caught.value.__cause__ is None  # one line, no chained traceback


def test_results_that_do_not_fit_leave_the_previous_store_and_the_report_is_one_line(small_disk, capsys):
    out = small_disk / "run"
    save_results(results_tree("teacher"), out)
    before = open_results(out)
    fill(small_disk)
    changed = before.copy()
    changed.attrs = {**before.attrs, "name": "changed"}
    with pytest.raises(DiskFull) as caught:
        save_results(changed, out)
    assert str(caught.value) == line(small_disk, out / "results.zarr")
    after = open_results(out)  # the previous store, intact
    assert after.attrs == before.attrs and after.identical(before)
    assert sorted(p.name for p in out.iterdir()) == ["results.zarr"]  # the new one's leftovers are gone
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"compressflow: error: no space left on '{small_disk}' while writing '{out}/report")
    assert len(err.splitlines()) == 1 and "Traceback" not in err
