"""Save, check and open the Zarr store of a run's results tree (``OUT/results.zarr``)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import xarray as xr

from compressflow._regular_files import check_regular
from compressflow.errors import FileRefused, InputError, disk_full, one_line, printable
from compressflow.rundir import RunDir
from compressflow.rundir.files import replace_dir

__all__ = ["MAX_STORE_BYTES", "MAX_STORE_FILE_BYTES", "STORE_MARKER", "check_results_store", "open_results",
           "save_results"]

#: root attribute that marks a store compressflow wrote (its value: the store's format version)
STORE_MARKER = "compressflow_results"
#: the largest file of a results store opened (a chunk holds one variable of one group: kilobytes)
MAX_STORE_FILE_BYTES = 256 * 2**20
#: the most a results store opened may hold in all (a study of 10,000 tasks writes a few MB)
MAX_STORE_BYTES = 2**30


def save_results(tree: xr.DataTree, out: Path | str) -> Path:
    """Write ``tree`` to ``out/results.zarr`` atomically (the previous results stay readable
    until the new store is complete). Returns the store path.

    Raises
    ------
    InputError
        If ``out/results.zarr`` exists and is not a store compressflow wrote (see
        :func:`check_results_store`): it is left as it is.
    DiskFull
        No space left for the new store (the previous one is left as it was).
    """
    check_results_store(out)
    target = RunDir(out).results
    portable = tree.map_over_datasets(_variable_length_strings)
    portable.attrs[STORE_MARKER] = 1
    with warnings.catch_warnings():
        # consolidated metadata is what makes the store open fast; zarr flags it as not yet in the v3 spec
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        try:
            replace_dir(target, lambda tmp: portable.to_zarr(tmp, mode="w", consolidated=True))
        except Exception as exc:  # the previous store is intact: the new one is built beside it
            full = disk_full(exc, target)
            if full is None:
                raise
            raise full from exc
    return target


def check_results_store(out: Path | str) -> None:
    """Refuse to replace ``out/results.zarr`` unless it is absent, an empty folder, or a store
    compressflow wrote and nothing else: a Zarr v3 group whose root carries
    :data:`STORE_MARKER` (or, from versions before the marker, the ``name``/``spec``/
    ``created`` attributes and a ``tasks`` group), holding only Zarr's own files
    (``zarr.json`` and chunks under ``c``). Replacing a store deletes it, so anything
    else there may be someone's work.

    Raises
    ------
    InputError
        Naming the path and why it is not a compressflow store.
    """
    path = RunDir(out).results
    if not path.exists() and not path.is_symlink():
        return
    why = _not_a_store(path)
    if why is not None:
        raise InputError(f"--out: {str(path)!r} exists and is not a compressflow results store ({why}); "
                         f"it would be replaced: move it away or choose another --out")


def _not_a_store(path: Path) -> str | None:
    if path.is_symlink():
        return "it is a symbolic link"
    if not path.is_dir():
        return "it is a file"
    if not any(path.iterdir()):
        return None  # an empty folder: replacing it loses nothing
    try:
        root = json.loads((path / "zarr.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return "no readable zarr.json at its root"
    attrs = root.get("attributes") if isinstance(root, dict) else None
    if not isinstance(attrs, dict):
        return "its zarr.json has no attributes"
    legacy = {"name", "spec", "created"} <= set(attrs) and (path / "tasks" / "zarr.json").is_file()
    if STORE_MARKER not in attrs and not legacy:
        return f"its root has no {STORE_MARKER!r} attribute"
    for f in path.rglob("*"):
        rel = f.relative_to(path)
        # Zarr v3 writes only zarr.json metadata and chunks under c/ (a 0-d array's chunk is c itself)
        if f.is_symlink() or (not f.is_dir() and f.name != "zarr.json" and "c" not in rel.parts):
            return f"it holds {rel.as_posix()!r}, which compressflow did not write"
    return None


def _variable_length_strings(ds: xr.Dataset) -> xr.Dataset:
    """Fixed-width numpy strings have no Zarr v3 spec; object strings are stored as the
    v3 variable-length UTF-8 type."""
    return ds.map(lambda v: v.astype(object) if v.dtype.kind == "U" else v).assign_coords(
        {k: c.astype(object) for k, c in ds.coords.items() if c.dtype.kind == "U"}
    )


def open_results(out: Path | str) -> xr.DataTree:
    """Open the results of a run directory (or a ``results.zarr`` path), loaded into memory.

    Every file of the store is checked first (Zarr opens them itself): each must be a regular
    file of at most :data:`MAX_STORE_FILE_BYTES`, all together at most :data:`MAX_STORE_BYTES`,
    so a chunk that is a FIFO or a link to ``/dev/zero`` is refused at once instead of hanging
    or filling memory.

    Raises
    ------
    FileNotFoundError
        If there is no results store there.
    InputError
        If the store cannot be read as compressflow results: a file that is not a regular file
        or too large, damaged metadata, a chunk that does not decode, or another program's Zarr
        store (no ``/tasks`` ledger). One line naming the store and, where it is one file or
        one array, that file or array.
    """
    path = Path(out)
    if path.name != RunDir(path).results.name:  # a run directory, not the store itself
        path = RunDir(path).results
    if not path.exists():
        raise FileNotFoundError(f"no results at {str(path)!r}; run `compressflow run SPEC --out DIR` first")

    def unreadable(detail: str) -> InputError:
        return InputError(f"{str(path)!r} is not a readable compressflow results store ({detail}); "
                          "re-run the spec with the same --out to rebuild it from the finished tasks' records")

    if path.is_dir():
        why = _special_file(path)
        if why is not None:
            raise unreadable(why)
    try:
        with warnings.catch_warnings():
            # a store without consolidated metadata is not ours; it is refused below, not warned about
            warnings.filterwarnings("ignore", message="Failed to open Zarr store with consolidated metadata",
                                    category=RuntimeWarning)
            with xr.open_datatree(path, engine="zarr") as tree:
                try:
                    tree = tree.load()
                except Exception as exc:  # a damaged chunk (zstd, truncated, wrong size): find which array
                    raise unreadable(_first_unreadable(tree) or f"{type(exc).__name__}: {one_line(exc)}") from None
    except InputError:
        raise
    except Exception as exc:  # unparsable or missing metadata, not a Zarr store at all
        raise unreadable(f"{type(exc).__name__}: {one_line(exc)}") from None
    ledger = tree.children.get("tasks")
    missing = [v for v in _LEDGER_NEEDED if ledger is None or v not in ledger.data_vars]
    if ledger is None or "task" not in ledger.dims or missing:
        raise unreadable("no /tasks ledger" if ledger is None else
                         f"its /tasks ledger lacks {', '.join(missing) or 'the task dimension'}")
    return tree


def _special_file(store: Path) -> str | None:
    """Why Zarr may not open the files of ``store``: the first that is not a regular file (or a
    link to a folder: Zarr would follow it), or too large, or the total past its bound; None if
    none. Checked on the paths, which does not block on a FIFO."""
    total = 0
    for folder, dirs, names in os.walk(store):
        dirs.sort()
        for name in dirs:
            if os.path.islink(os.path.join(folder, name)):
                return f"{printable(os.path.join(folder, name))} is a symbolic link to a folder"
        for name in sorted(names):
            path = os.path.join(folder, name)
            try:
                size = check_regular(path, what="file").st_size
            except FileRefused as exc:
                return str(exc)
            except OSError as exc:  # a broken link
                return f"file {printable(path)}: {type(exc).__name__}: {one_line(exc.strerror or exc)}"
            if size > MAX_STORE_FILE_BYTES:
                return (f"file {printable(path)} is larger than its limit of {MAX_STORE_FILE_BYTES:,} bytes "
                        f"({size:,} bytes)")
            total += size
            if total > MAX_STORE_BYTES:
                return f"it holds more than {MAX_STORE_BYTES:,} bytes"
    return None


_LEDGER_NEEDED = ("stage", "op", "status", "duration_s", "energy_kwh", "co2_g")  # what the summary reads


def _first_unreadable(tree: xr.DataTree) -> str | None:
    """``node/variable: error`` for the first array of a lazily opened tree that cannot be read."""
    for node in tree.subtree:
        for name, var in node.variables.items():
            try:
                var.values
            except Exception as exc:
                where = "/".join(p for p in (node.path.strip("/"), str(name)) if p)
                return f"{where}: {type(exc).__name__}: {one_line(exc)}"
    return None
