"""The run directory's files: a crash while replacing a file keeps the old one, and parts of
the run directory that are files are refused before any task runs."""

from __future__ import annotations

import os

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
