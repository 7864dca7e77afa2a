"""Opening a results store that compressflow wrote, then something damaged (or that another
program wrote): ``open_results`` and ``compressflow report`` give one line naming the store."""

from __future__ import annotations

import os
import re
import shutil

import numpy as np
import pytest
import xarray as xr

from compressflow.cli import main
from compressflow.errors import InputError
from compressflow.results import open_results, save_results, store
from tests.support.special_files import SPECIAL, make_special, promptly


def ledger() -> xr.Dataset:
    return xr.Dataset(
        {"stage": ("task", ["teacher", "test"]), "op": ("task", ["train", "evaluate"]),
         "status": ("task", ["ok", "ok"]), "duration_s": ("task", np.array([1.5, 0.25])),
         "energy_kwh": ("task", np.array([1e-5, 2e-6])), "co2_g": ("task", np.array([0.004, 0.0008]))},
        coords={"task": ["train-1", "evaluate-2"]},
    )


@pytest.fixture()
def run_dir(tmp_path):
    """A run directory whose results.zarr save_results wrote from a small hand-built tree."""
    tree = xr.DataTree.from_dict({"/tasks": ledger(), "/teacher": xr.Dataset({"accuracy": 0.9}),
                                  "/test": xr.Dataset({"accuracy": 0.875})})
    save_results(tree, tmp_path)
    return tmp_path


def unreadable(run_dir, detail):
    store = re.escape(repr(str(run_dir / "results.zarr")))
    return rf"^{store} is not a readable compressflow results store \({detail}.*\); re-run the spec with the same --out"


def test_an_intact_store_reads_back(run_dir):
    tree = open_results(run_dir)
    assert tree["tasks"].to_dataset().duration_s.values.tolist() == [1.5, 0.25]
    assert float(tree["test"]["accuracy"]) == 0.875


@pytest.mark.parametrize(("file", "content", "detail"), [
    ("tasks/duration_s/c/0", b"junk", r"tasks/duration_s: RuntimeError: Zstd decompression error"),
    ("teacher/accuracy/c", b"\x28\xb5\x2f\xfd", r"teacher/accuracy: RuntimeError: Zstd decompression error"),
    ("zarr.json", b"{", r"JSONDecodeError: Expecting property name"),
    ("zarr.json", b'{"zarr_format": 3, "node_type": "array"}', r"\w+Error: "),
])
def test_a_damaged_store_is_one_line_naming_it(run_dir, file, content, detail):
    (run_dir / "results.zarr" / file).write_bytes(content)
    with pytest.raises(InputError, match=unreadable(run_dir, detail)) as info:
        open_results(run_dir)
    assert "\n" not in str(info.value)


def test_a_foreign_store_is_not_results(tmp_path):
    save_results(xr.DataTree.from_dict({"/other": xr.Dataset({"x": ("i", [1, 2])})}), tmp_path)
    with pytest.raises(InputError, match=unreadable(tmp_path, r"no /tasks ledger")):
        open_results(tmp_path)
    save_results(xr.DataTree.from_dict({"/tasks": ledger().drop_vars("status")}), tmp_path)
    with pytest.raises(InputError, match=unreadable(tmp_path, r"its /tasks ledger lacks status")):
        open_results(tmp_path)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "results.zarr").write_text("a file")
    with pytest.raises(InputError, match=unreadable(tmp_path / "x", r"\w+Error")):
        open_results(tmp_path / "x")


def test_report_on_a_corrupted_store_exits_2_with_one_line(run_dir, capsys):
    chunk = run_dir / "results.zarr" / "tasks" / "duration_s" / "c" / "0"
    chunk.write_bytes(b"junk")
    assert main(["report", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert re.match(r"compressflow: error: report: " + unreadable(run_dir, r"tasks/duration_s: RuntimeError: Zstd")[1:],
                    err), err
    assert chunk.read_bytes() == b"junk" and not (run_dir / "report").exists()  # nothing touched or written


@pytest.mark.parametrize("kind", list(SPECIAL))
@pytest.mark.parametrize("file", ["tasks/duration_s/c/0", "teacher/accuracy/c", "zarr.json", "tasks/zarr.json"])
def test_a_store_file_that_is_not_a_regular_file_is_refused_before_zarr_opens_it(run_dir, file, kind):
    path = make_special(run_dir / "results.zarr" / file, kind)
    with pytest.raises(InputError) as info:
        promptly(lambda: open_results(run_dir))
    detail = f"file {str(path)!r} is {SPECIAL[kind]}, not a regular file"
    assert re.match(unreadable(run_dir, re.escape(detail)), str(info.value)), str(info.value)
    assert "\n" not in str(info.value)


def test_a_store_over_its_bounds_or_with_a_folder_link_is_refused(run_dir, monkeypatch, tmp_path):
    files = [p for p in (run_dir / "results.zarr").rglob("*") if p.is_file()]
    largest = max(files, key=lambda p: p.stat().st_size)  # the root's consolidated metadata
    size = largest.stat().st_size
    monkeypatch.setattr(store, "MAX_STORE_FILE_BYTES", size - 1)
    with pytest.raises(InputError, match=unreadable(run_dir, re.escape(
            f"file {str(largest)!r} is larger than its limit of {size - 1:,} bytes ({size:,} bytes)"))):
        open_results(run_dir)
    monkeypatch.setattr(store, "MAX_STORE_FILE_BYTES", size)
    total = sum(p.stat().st_size for p in files)
    monkeypatch.setattr(store, "MAX_STORE_BYTES", total - 1)
    with pytest.raises(InputError, match=unreadable(run_dir, re.escape(f"it holds more than {total - 1:,} bytes"))):
        open_results(run_dir)
    monkeypatch.setattr(store, "MAX_STORE_BYTES", total)
    assert float(open_results(run_dir)["test"]["accuracy"]) == 0.875  # exactly at both bounds: read
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.mkfifo(elsewhere / "0")
    chunks = run_dir / "results.zarr" / "tasks" / "duration_s" / "c"
    shutil.rmtree(chunks)
    chunks.symlink_to(elsewhere)
    link = re.escape(f"{str(chunks)!r} is a symbolic link to a folder")
    with pytest.raises(InputError, match=unreadable(run_dir, link)):
        promptly(lambda: open_results(run_dir))


def test_report_on_a_store_with_a_fifo_chunk_exits_2_with_one_line(run_dir, capsys):
    chunk = make_special(run_dir / "results.zarr" / "test" / "accuracy" / "c", "fifo")
    assert promptly(lambda: main(["report", str(run_dir)])) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"file {str(chunk)!r} is a FIFO, not a regular file" in err
