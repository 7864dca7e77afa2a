"""The run directory's files: a crash while replacing a file keeps the old one, what a killed
replacement of the results store left is removed by the next run once it holds the lock (and
never without it), and parts of the run directory that are files, and places that are no run
directory (the filesystem root, the home directory, someone's folder), are refused before any
task runs."""

from __future__ import annotations

import os
import re

import pytest

from compressflow.errors import InputError
from compressflow.rundir.files import atomic_write_bytes


def test_crash_while_replacing_a_file_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    atomic_write_bytes(path, b"old")

    def crash(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary file left behind


@pytest.mark.parametrize("name", ["records", "attempts", "artifacts"])
def test_run_directory_parts_that_are_files_are_refused_before_any_task(tmp_path, name):
    from compressflow.rundir import RunDir

    (tmp_path / name).write_text("x")
    with pytest.raises(InputError, match=rf"^--out: '.*/{name}' is a file, not a directory; compressflow keeps its "
                                         rf"{name} there: move the file away or choose another --out$"):
        RunDir(tmp_path).check_writable()
    assert (tmp_path / name).read_text() == "x"


def _leftovers(out):
    """What replace_dir of OUT/results.zarr leaves when its process is killed, and a user's look-alike."""
    (out / ".results.zarr.0123abcd.tmp" / "tasks").mkdir(parents=True)
    (out / ".results.zarr.0123abcd.tmp" / "tasks" / "zarr.json").write_text("{}")
    (out / ".results.zarr.89abcdef.old").mkdir()
    (out / ".results.zarr.notes.tmp").write_text("mine")  # not a name replace_dir makes: kept


def test_a_killed_results_replacement_is_cleaned_once_the_lock_is_held(tmp_path):
    import fcntl

    from compressflow.rundir import RunDir

    _leftovers(tmp_path)
    with open(tmp_path / ".lock", "a+") as other:  # another run is live: its store is being written
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(InputError, match="is in use by another compressflow run"):
            RunDir(tmp_path).lock().__enter__()
        assert (tmp_path / ".results.zarr.0123abcd.tmp" / "tasks" / "zarr.json").is_file()
    with RunDir(tmp_path).lock():
        left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".lock", ".results.zarr.notes.tmp", ".secret"]


@pytest.mark.parametrize("where", ["root", "home"])
def test_the_filesystem_root_or_the_home_directory_is_refused(where, monkeypatch, tmp_path):
    from compressflow.rundir import RunDir

    monkeypatch.setenv("HOME", str(tmp_path))
    out = "/" if where == "root" else str(tmp_path)
    what = "the root of the filesystem" if where == "root" else "your home directory"
    with pytest.raises(InputError, match=rf"^--out: '{re.escape(out)}' is {what}; give a folder of the run's own"):
        RunDir(out).check_writable()
    assert not (tmp_path / ".secret").exists() and not (tmp_path / "records").exists()


def test_a_folder_with_files_that_is_no_run_directory_is_refused_and_an_empty_or_earlier_one_is_not(tmp_path):
    from compressflow.rundir import RunDir

    (tmp_path / "thesis.tex").write_text("x")
    with pytest.raises(InputError, match=r"^--out: '.*' holds files \(e\.g\. 'thesis\.tex'\) and is not a compressflow "
                                         r"run directory; give a new or empty folder \(e\.g\. '.*/runs/NAME'\)$"):
        RunDir(tmp_path).check_writable()
    assert [p.name for p in tmp_path.iterdir()] == ["thesis.tex"]
    (tmp_path / "empty").mkdir()
    RunDir(tmp_path / "empty").check_writable()
    RunDir(tmp_path / "new" / "run").check_writable()
    (tmp_path / "earlier").mkdir()
    (tmp_path / "earlier" / "records").mkdir()
    (tmp_path / "earlier" / "spec.yaml").write_text("name: x\n")  # a run directory may hold the user's files too
    RunDir(tmp_path / "earlier").check_writable()
