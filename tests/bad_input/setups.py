"""Setup functions of the bad-input matrix: ``SETUPS[name](tmp, out)`` prepares the files a
case needs (a crafted dataset file, a corrupted store, ...) before its command runs.

Each area keeps its functions together in its own block; register them with ``@setup``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

SETUPS: dict[str, Callable[[Path, Path], None]] = {}


def setup(fn: Callable[[Path, Path], None]) -> Callable[[Path, Path], None]:
    if fn.__name__ in SETUPS:
        raise ValueError(f"duplicate bad-input setup {fn.__name__!r}")
    SETUPS[fn.__name__] = fn
    return fn


@setup
def out_is_a_file(tmp: Path, out: Path) -> None:
    """The run directory path exists as a regular file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("not a directory\n")


# -- area: rundir (the run directory: results store, records, lock) ---------------------------

_held_locks: list = []  # open files holding a run lock for the rest of this process


def _run_dir(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    return out


@setup
def rundir_foreign_results_folder(tmp: Path, out: Path) -> None:
    """OUT/results.zarr is someone's folder (with a file in it)."""
    (_run_dir(out) / "results.zarr").mkdir()
    (out / "results.zarr" / "notes.txt").write_text("mine\n")


@setup
def rundir_results_is_a_file(tmp: Path, out: Path) -> None:
    (_run_dir(out) / "results.zarr").write_text("not a store\n")


@setup
def rundir_results_is_a_link(tmp: Path, out: Path) -> None:
    (tmp / "elsewhere").mkdir()
    (_run_dir(out) / "results.zarr").symlink_to(tmp / "elsewhere")


@setup
def rundir_foreign_zarr_group(tmp: Path, out: Path) -> None:
    """Another program's Zarr v3 group named results.zarr."""
    import json

    (_run_dir(out) / "results.zarr").mkdir()
    (out / "results.zarr" / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group",
                                                                "attributes": {"title": "my data"}}))


@setup
def rundir_results_zarr_json_garbage(tmp: Path, out: Path) -> None:
    (_run_dir(out) / "results.zarr").mkdir()
    (out / "results.zarr" / "zarr.json").write_bytes(b"\xff\xfe not json")


@setup
def rundir_store_with_stray_file(tmp: Path, out: Path) -> None:
    """A compressflow store with a user's file put inside it."""
    import json

    store = _run_dir(out) / "results.zarr"
    (store / "tasks").mkdir(parents=True)
    (store / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group",
                                                 "attributes": {"compressflow_results": 1}}))
    (store / "tasks" / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}))
    (store / "tasks" / "analysis.ipynb").write_text("{}")


def _file_at(name: str):
    def make(tmp: Path, out: Path) -> None:
        (_run_dir(out) / name).write_text("a file\n")

    make.__name__ = f"rundir_{name}_is_a_file"
    return setup(make)


for _name in ("records", "attempts", "artifacts", "rejected"):
    _file_at(_name)


@setup
def rundir_records_is_a_broken_link(tmp: Path, out: Path) -> None:
    (_run_dir(out) / "records").symlink_to(tmp / "gone")


@setup
def rundir_lock_is_a_directory(tmp: Path, out: Path) -> None:
    (_run_dir(out) / ".lock").mkdir()


@setup
def rundir_locked_by_another_run(tmp: Path, out: Path) -> None:
    """Another run holds OUT/.lock (a lock on another open file: flock locks are per open
    file, so a second open in this process conflicts as another process's would)."""
    import fcntl

    fh = open(_run_dir(out) / ".lock", "a+", encoding="utf-8")
    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    fh.write("pid 4242 on host elsewhere, started 2026-01-01T00:00:00+00:00\n")
    fh.flush()
    _held_locks.append(fh)
