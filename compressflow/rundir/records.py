"""The small picklable things that travel through the task graph — artifacts (a file + its
hash), a stage's :class:`Record` and the ledger's :class:`LedgerEntry` — and the one format
and reader of their persisted form, ``OUT/records/<key>.json``. Models and tensors never
travel; records persist as JSON so finished work survives the client.

The types are the op contract's (:mod:`compressflow.ops` exports them); they are defined
here, beside the run directory that keeps them, so that every layer that reads a run
directory (the engine, the results, ``compressflow status``) reads records one way.

A record is signed: its ``digest`` is ``hmac-sha256:<hex>``, an HMAC of the rest keyed with
the run directory's key (``OUT/.secret``, :mod:`compressflow.rundir.secret`), so a field
edited by hand cannot be made to pass by recomputing a hash, and a record copied from another
run directory does not verify. The digest is mandatory: records written by earlier versions
(a plain sha256 digest, or none) and records of a run directory without its key are refused,
and their tasks run again. Its artifact must lie inside the run directory."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from compressflow._regular_files import file_kind, is_within, read_regular
from compressflow.errors import FileRefused, printable
from compressflow.rundir.files import artifact_digest
from compressflow.rundir.secret import digest_of, signature_problem

if TYPE_CHECKING:  # imported where a record is built: a spec check reaches this module without needing xarray
    import xarray as xr

__all__ = ["RECORD_LIMIT", "Artifact", "LedgerEntry", "Record", "RecordError", "Upstream", "artifact_problem",
           "read_record"]

#: the most bytes a record file may hold (a record is kilobytes; its metrics curves a few more)
RECORD_LIMIT = 64 << 20


@dataclass(frozen=True)
class Artifact:
    """A file a stage produced, identified by its content hash.

    Parameters
    ----------
    kind : str
        ``"checkpoint"`` or ``"zarr"``.
    path : str
        Absolute path (on storage every worker can read); persisted relative to the run
        directory when it lies inside it, and resolved again when loaded.
    sha256 : str
        Hex digest of the file's bytes; loaders verify it.
    meta : dict
        Small JSON-able facts a consumer needs (model name and build kwargs, ...).
    """

    kind: str
    path: str
    sha256: str
    meta: dict[str, Any] = field(default_factory=dict)


def artifact_problem(artifact: Artifact, *, check_hash: bool = True) -> str | None:
    """Why ``artifact`` cannot be used (missing, neither a regular file nor a directory, or,
    with ``check_hash``, its content no longer matches its recorded hash), or None when it is
    intact. Never blocks: a FIFO (or one inside a tree) is refused, not read."""
    path = Path(artifact.path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f"{artifact.kind} {printable(path)} is missing"
    except OSError as exc:
        return f"{artifact.kind} {printable(path)} cannot be read ({exc.strerror})"
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return f"{artifact.kind} {printable(path)} is {file_kind(mode)}, not a regular file"
    if check_hash:
        try:
            digest = artifact_digest(path, what=artifact.kind)
        except FileRefused as exc:
            return str(exc)
        except OSError as exc:
            return f"{artifact.kind} {printable(path)} cannot be read ({exc.strerror})"
        if digest != artifact.sha256:
            return f"{artifact.kind} {printable(path)} does not match its recorded sha256 (modified or torn)"
    return None


@dataclass
class Record:
    """What a stage function returns: labelled metrics and an optional artifact.

    ``metrics`` is an :class:`xarray.Dataset` of scalars and named-dimension arrays (e.g.
    ``train_loss`` over ``epoch``) with units in ``attrs["units"]``; the runner stacks the
    records of a stage along its sweep axes.
    """

    metrics: xr.Dataset
    artifact: Artifact | None = None


@dataclass
class LedgerEntry:
    """One entry of the ``/tasks`` ledger: what ran, where, for how long, at what energy."""

    key: str
    stage: str
    op: str
    point: dict[str, Any]
    status: str = "pending"  # ok | failed | upstream_failed | cancelled
    error: str = ""
    worker: str = ""
    start: float = float("nan")  # POSIX seconds
    end: float = float("nan")
    energy: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0  # executions started, this one included (> 1: a worker died mid-task and Dask retried it)
    workers_tried: list[str] = field(default_factory=list)
    resumed_from_epoch: int = 0  # epochs restored from saved training states instead of trained (all its fits)
    attempts_kwh: list[float] = field(default_factory=list)  # energy of each attempt, in start order
    code: str = ""  # sha256 of a user op's source as the worker that ran it imported it ("" for a built-in op)
    record: Record | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def duration_s(self) -> float:
        return self.end - self.start

    def to_json(self, root: Path | str | None = None, *, key: bytes) -> str:
        """The record as JSON, signed with a ``digest``
        (:func:`~compressflow.rundir.secret.digest_of` the rest) so that an
        edit shows.

        Parameters
        ----------
        root : path, optional
            The run directory: artifact paths inside it are stored relative to it, so a
            moved or copied run directory reads its own files (see :meth:`from_json`).
        key : bytes
            The run directory's key (:func:`compressflow.rundir.secret.create_key`).
        """
        # field by field: dataclasses.asdict would deep-copy the metrics Dataset only to drop it
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "record"}
        if self.record is not None:
            art = dataclasses.asdict(self.record.artifact) if self.record.artifact else None
            if art is not None and root is not None:
                art["path"] = _relative_to(art["path"], Path(root))
            data["record"] = {"metrics": self.record.metrics.to_dict(data="list"), "artifact": art}
        payload = json.loads(json.dumps(data, default=_json_default))  # the form a reader will see
        return json.dumps({**payload, "digest": digest_of(payload, key)})

    @classmethod
    def from_json(cls, text: str, root: Path | str | None = None) -> LedgerEntry:
        """Parse :meth:`to_json`'s output without checking it (see :func:`read_record`).

        A relative artifact path is resolved against ``root`` (the run directory), or left as
        it is without one.
        """
        return _from_data(json.loads(text), root)


def _from_data(data: dict[str, Any], root: Path | str | None, metrics: bool = True) -> LedgerEntry:
    data = dict(data)
    data.pop("digest", None)
    rec = data.pop("record", None)
    task = LedgerEntry(**data)
    if rec is not None:
        art = rec["artifact"]
        if art is not None and root is not None:
            art = {**art, "path": str(Path(root) / art["path"])}  # an absolute path stays as it is
        if metrics:
            import xarray as xr

            ds = xr.Dataset.from_dict(rec["metrics"])
        else:
            ds = None  # the caller asked for the ledger fields only (no xarray)
        task.record = Record(ds, Artifact(**art) if art else None)
    return task


class RecordError(ValueError):
    """A persisted record that cannot be trusted; the message says why (one line)."""


_STATUSES = ("ok", "failed", "upstream_failed")
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "key": str, "stage": str, "op": str, "point": dict, "status": str, "error": str, "worker": str,
    "start": (int, float), "end": (int, float), "energy": dict, "attempts": int, "workers_tried": list,
}
#: fields records of earlier versions do not have (they read as the field's default)
_OPTIONAL: dict[str, type | tuple[type, ...]] = {"resumed_from_epoch": int, "attempts_kwh": list, "code": str}


def read_record(path: Path | str, root: Path | str | None = None, *, check_hash: bool = True,
                metrics: bool = True) -> LedgerEntry:
    """Read and validate the persisted record ``OUT/records/<key>.json``: the one reader of
    records (:meth:`compressflow.rundir.RunDir.read_record` calls it).

    A record is trusted only when it is what :meth:`LedgerEntry.to_json` wrote for this task:
    a regular file of at most :data:`RECORD_LIMIT` bytes (a FIFO is refused, not waited on),
    every field present with its type, ``key`` equal to the file's name, a finished record
    with its metrics, accuracies in [0, 1] (the test ``accuracy`` also finite), energies
    finite and ≥ 0 or NaN, its ``digest`` signed with the run directory's key (mandatory: a
    record of an earlier version, with a plain sha256 or none, is refused), and its artifact
    inside the run directory, present (and, with ``check_hash``, matching its sha256).

    Parameters
    ----------
    path : path
        The record file.
    root : path, optional
        The run directory: its key checks the digest, relative artifact paths are resolved
        against it and every artifact must lie inside it (default: the directory above
        ``records/``).
    check_hash : bool
        Hash the artifact (a checkpoint, or a whole Zarr store) against the record.
    metrics : bool
        Build the record's metrics as an :class:`xarray.Dataset`; False leaves
        ``record.metrics`` None (every check still runs, on the JSON): for readers that need
        the ledger fields only, without importing xarray.

    Returns
    -------
    LedgerEntry
        With absolute artifact paths.

    Raises
    ------
    FileNotFoundError
        No record at ``path``.
    RecordError
        The record is unreadable or fails a check; the message says which.
    """
    path = Path(path)
    root = Path(root) if root is not None else path.resolve().parent.parent
    try:
        text = read_regular(path, RECORD_LIMIT, what="record").decode("utf-8")
    except FileNotFoundError:
        raise
    except FileRefused as exc:  # its message names the file, as the caller's will
        raise RecordError(str(exc).removeprefix(f"record {printable(path)} ")) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordError(f"cannot be read ({exc})") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise RecordError(f"is not JSON ({type(exc).__name__}: {_short(str(exc))}; torn or edited)") from None
    if not isinstance(data, dict):
        raise RecordError(f"is not a JSON object (got {type(data).__name__})")
    _check_schema(data, path)
    task = _parse(data, root, metrics)
    _check_values(task.energy, data.get("record"))
    problem = signature_problem(data, root)  # after the specific checks, whose messages say more
    if problem is not None:
        raise RecordError(problem)
    art = task.record.artifact if task.record is not None else None
    if art is not None:
        if not is_within(art.path, root):
            raise RecordError(f"{art.kind} {printable(art.path)} lies outside the run directory {printable(root)}")
        problem = artifact_problem(art, check_hash=check_hash)
        if problem is not None:
            raise RecordError(problem)
    return task


def _check_schema(data: dict[str, Any], path: Path) -> None:
    missing = [f for f in _FIELDS if f not in data]
    if missing:
        raise RecordError(f"has no {', '.join(repr(f) for f in missing)} field")
    unknown = sorted(set(data) - set(_FIELDS) - set(_OPTIONAL) - {"record", "digest"})
    if unknown:
        raise RecordError(f"has unknown field(s) {', '.join(map(repr, unknown))}")
    for name, kind in {**_FIELDS, **{k: v for k, v in _OPTIONAL.items() if k in data}}.items():
        value = data[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise RecordError(f"field {name!r} = {_short(value)} is not {_kind_name(kind)}")
    if data.get("resumed_from_epoch", 0) < 0:
        raise RecordError(f"field 'resumed_from_epoch' = {data['resumed_from_epoch']!r} is negative")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in data.get("attempts_kwh", [])):
        raise RecordError("field 'attempts_kwh' is not a list of numbers")
    if data["key"] != path.stem:
        raise RecordError(f"key {_short(data['key'])} does not match its file name {path.name!r}")
    if data["status"] not in _STATUSES:
        raise RecordError(f"status {_short(data['status'])} is not one of {', '.join(_STATUSES)}")
    if not all(isinstance(w, str) for w in data["workers_tried"]):
        raise RecordError("field 'workers_tried' is not a list of strings")
    rec = data.get("record")
    if data["status"] == "ok":
        if not isinstance(rec, dict) or not isinstance(rec.get("metrics"), dict):
            raise RecordError("has status 'ok' but no record of metrics")
    if rec is not None:
        if not isinstance(rec, dict) or set(rec) != {"metrics", "artifact"}:
            raise RecordError("field 'record' is not {metrics, artifact}")
        art = rec["artifact"]
        if art is not None:
            fields = {f.name for f in dataclasses.fields(Artifact)}
            if (not isinstance(art, dict) or set(art) - fields or not {"kind", "path", "sha256"} <= set(art)
                    or not all(isinstance(art[f], str) for f in ("kind", "path", "sha256"))
                    or not isinstance(art.get("meta", {}), dict)):
                raise RecordError("field 'record.artifact' is not {kind, path, sha256, meta}")


def _parse(data: dict[str, Any], root: Path, metrics: bool) -> LedgerEntry:
    try:
        return _from_data(data, root, metrics)
    except Exception as exc:  # untrusted input: any failure to rebuild it means it cannot be reused
        raise RecordError(f"cannot be parsed ({type(exc).__name__}: {_short(str(exc))})") from None



def _check_values(energy: dict[str, Any], record: dict[str, Any] | None) -> None:
    for name, value in energy.items():
        if name.endswith("_kwh") or name in ("co2_g", "duration_s"):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0 or math.isinf(value):
                raise RecordError(f"energy {name} = {_short(value)} is not a finite number ≥ 0 (or NaN)")
    variables = (record or {}).get("metrics", {}).get("data_vars", {})
    if not isinstance(variables, dict):
        raise RecordError("field 'record.metrics' has no mapping of variables")
    for name, var in variables.items():
        # accuracies are fractions; a drop (teacher minus student) may be negative
        if "accuracy" not in str(name) or "drop" in str(name):
            continue
        try:
            values = np.asarray(var["data"])
        except (TypeError, KeyError, ValueError):
            raise RecordError(f"{name} has no data") from None
        if values.dtype.kind not in "fiub":
            raise RecordError(f"{name} = {_short(values.tolist())} is not a number")
        values = values.astype(float)
        if name == "accuracy" and not np.isfinite(values).all():
            raise RecordError(f"accuracy = {_short(values.tolist())} is not finite")
        if (np.isinf(values) | (values < 0) | (values > 1)).any():
            raise RecordError(f"{name} = {_short(values.tolist())} is outside [0, 1]")


def _relative_to(path: str, root: Path) -> str:
    """``path`` relative to ``root`` when it lies inside it (else unchanged)."""
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path



def _kind_name(kind: type | tuple[type, ...]) -> str:
    names: dict[type | tuple[type, ...], str] = {str: "a string", dict: "a mapping", list: "a list", int: "an integer"}
    return "a number" if kind == (int, float) else names[kind]


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


Upstream = list[LedgerEntry]
"""Annotation of a *fan-in* stage input: it receives the ledger entries of every task of the
upstream stage (all sweep points, failed ones included, each with its ``point``, ``status``
and ``record``), e.g. to gather blockwise-distilled layers into one student."""

