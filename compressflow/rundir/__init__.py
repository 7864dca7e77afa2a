"""The run directory (``--out``): one class, :class:`RunDir`, owns its layout, and this package
owns the formats of the files in it. Nothing outside ``compressflow.rundir`` knows a file
name or a file format of the run directory.

::

    OUT/
      .lock                  held (flock) by the run working here; names its holder (lock.py)
      .secret                the key that signs its records (secret.py; mode 0600)
      records/<key>.json     one finished task each (records.py); a re-run reuses them
      attempts/<key>.log     every start / energy sample / end of a task (attempts.py)
      artifacts/<key><sfx>   what tasks produced (checkpoints, Zarr stores)
      artifacts/<key>.resume<n>.pt   the resumable state of a training task's n-th fit
      rejected/<key>[.n]/    records (and their artifacts) refused for reuse, with why.txt
      results.zarr           the results tree (compressflow.results); a run killed while
                             replacing it leaves .results.zarr.<hex>.tmp/.old, which the
                             next run removes once it holds the lock

A leaf of the package's layers (it imports neither torch nor Dask): the ops write artifacts
into it, the engine records and attempts, the results read it, ``compressflow status`` reads
it without a cluster.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from compressflow._regular_files import is_within, read_regular
from compressflow.errors import FileRefused, InputError, printable
from compressflow.rundir import lock as _lock
from compressflow.rundir import secret as _secret
from compressflow.rundir.attempts import Attempt, AttemptLog, read_attempts
from compressflow.rundir.files import remove_stale_replacements
from compressflow.rundir.lock import RunState
from compressflow.rundir.records import RECORD_LIMIT, LedgerEntry, RecordError, artifact_problem, read_record

__all__ = ["DEFAULT_PARENT", "RunDir", "RunState"]

#: where a study's run directory goes when none is given: ``runs/<spec name>``
DEFAULT_PARENT = Path("runs")


@dataclass(frozen=True)
class RunDir:
    """Paths, records, attempt logs, training states, lock and rejection of bad records of one
    run directory.

    Small and picklable: the graph sends it to every task.

    Parameters
    ----------
    root : path
        The run directory.

    Examples
    --------
    >>> RunDir("runs/quickstart").record("train-abc").as_posix()
    'runs/quickstart/records/train-abc.json'
    >>> RunDir.default("quickstart").root.as_posix()
    'runs/quickstart'
    """

    root: Path

    #: what compressflow keeps under ``--out``; each must be a directory (or absent)
    PARTS = ("records", "attempts", "artifacts", "rejected")
    #: any of these makes a folder a compressflow run directory (:meth:`check_writable`)
    MARKERS = (*PARTS, "results.zarr", ".lock", _secret.NAME)

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root))

    @classmethod
    def default(cls, name: str) -> RunDir:
        """The run directory of a study named ``name`` when ``--out`` is not given."""
        return cls(DEFAULT_PARENT / name)

    # -- paths -------------------------------------------------------------------------------

    @property
    def results(self) -> Path:
        """The results store, ``OUT/results.zarr``."""
        return self.root / "results.zarr"

    def record(self, key: str) -> Path:
        """Where the finished record of task ``key`` is kept."""
        return self.root / "records" / f"{key}.json"

    def artifact(self, key: str, suffix: str) -> Path:
        """Path for an artifact of task ``key`` (its folder is created)."""
        path = self.root / "artifacts" / f"{key}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def training_state(self, key: str, fit: int) -> Path:
        """The resumable state of the ``fit``-th training loop of task ``key`` (its folder created)."""
        return self.artifact(key, f".resume{fit}.pt")

    def training_states(self, key: str) -> list[Path]:
        """Every resumable training state of task ``key`` on disk."""
        folder = self.root / "artifacts"
        return sorted(folder.glob(f"{key}.resume*.pt")) if folder.is_dir() else []

    # -- records -----------------------------------------------------------------------------

    def write_record(self, entry: LedgerEntry) -> Path:
        """Persist a finished task's record atomically: readers see no record or the whole one.

        Signed with the run directory's key (created here when it has none yet; read once per
        process). Not fsync'd: a kill of the worker (or of the whole run) leaves the record
        intact, as the kernel holds the written pages; what a power cut could tear, the digest
        check of :meth:`read_record` refuses, and the task runs again. A flush per task would
        cost a disk round trip for every task (5 ms on a loaded local disk, tens on network
        filesystems), more than the engine's whole per-task budget.
        """
        path = self.record(entry.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        key = _secret.create_key(self.root)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(entry.to_json(root=self.root, key=key))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def read_record(self, key: str, *, check_hash: bool = True, metrics: bool = True) -> LedgerEntry:
        """The trusted record of task ``key`` (:func:`compressflow.rundir.records.read_record`).

        Raises
        ------
        FileNotFoundError
            No record.
        RecordError
            A record that fails a check; the message says which.
        """
        return read_record(self.record(key), self.root, check_hash=check_hash, metrics=metrics)

    def finished(self, key: str, *, check_hash: bool = False, metrics: bool = True) -> LedgerEntry | None:
        """The record of task ``key`` when it is trusted and ended ``ok``, else None (missing,
        torn, edited, unsigned — written by an earlier version, or the run directory has no
        key —, not a regular file, or failed: the task simply runs again)."""
        try:
            entry = self.read_record(key, check_hash=check_hash, metrics=metrics)
        except (FileNotFoundError, RecordError):
            return None
        return entry if entry.ok else None

    def record_keys(self) -> list[str]:
        """The keys of every record file in the run directory, sorted."""
        folder = self.root / "records"
        return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []

    # -- attempts and training states -------------------------------------------------------

    def attempt_log(self, key: str, worker: str) -> AttemptLog:
        """This attempt's writer of the attempt log of task ``key``."""
        return AttemptLog(self._attempts(key), worker)

    def attempts(self, key: str) -> list[Attempt]:
        """Every attempt of task ``key`` its log tells of, in start order.

        Raises
        ------
        InputError
            The log exists but cannot be read, or is not a regular file (a FIFO is refused,
            not waited on) or is too large.
        """
        try:
            return list(read_attempts(self._attempts(key)).values())
        except FileRefused as exc:
            raise InputError(f"--out: {exc}; move it away (it only records attempts)") from None
        except OSError as exc:
            raise InputError(f"--out: cannot read {str(self._attempts(key))!r} ({exc.strerror})") from None

    def _attempts(self, key: str) -> Path:
        return self.root / "attempts" / f"{key}.log"

    def drop_training_states(self, key: str) -> list[tuple[Path, OSError]]:
        """Delete the resumable states of finished task ``key``; return those that could not be."""
        failed = []
        for path in self.training_states(key):
            try:
                path.unlink()
            except OSError as exc:
                failed.append((path, exc))
        return failed

    # -- the directory as a whole ------------------------------------------------------------

    def check_writable(self) -> None:
        """Create the directory if needed and refuse, before any task runs, one that cannot be
        written or whose parts (:attr:`PARTS`) are files or broken links, and one that is no
        place for a run: the filesystem root, the home directory, or a folder that holds files
        but none of a run directory's (:attr:`MARKERS`) — a run would scatter its own among
        them. A new or empty folder, or an earlier run's, is fine.

        Raises
        ------
        InputError
            Naming the path and how to fix it.
        """
        out = self.root
        self._check_place()
        try:
            out.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=out):
                pass
        except OSError as exc:
            raise InputError(f"--out: cannot write to {str(out)!r} ({exc.strerror}); choose a writable directory") from None
        self.check_parts(self.PARTS)

    def _check_place(self) -> None:
        """Refuse the filesystem root, the home directory and someone's folder (:meth:`check_writable`)."""
        try:
            where = self.root.resolve()
        except (RuntimeError, OSError):  # a loop of links: the write test says so
            return
        if where == Path(where.anchor):
            raise InputError(f"--out: {printable(self.root)} is the root of the filesystem; give a folder of the "
                             f"run's own (e.g. runs/NAME)")
        try:
            home = Path.home().resolve()
        except (RuntimeError, KeyError):  # no home directory known
            home = None
        if where == home:
            raise InputError(f"--out: {printable(self.root)} is your home directory; give a folder of the run's own "
                             f"(e.g. {printable(self.root / 'runs' / 'NAME')})")
        if not self.root.is_dir() or any(os.path.lexists(self.root / name) for name in self.MARKERS):
            return
        try:
            with os.scandir(self.root) as entries:
                stranger = next(entries, None)
        except OSError:  # unreadable: the write test says so
            return
        if stranger is not None:
            raise InputError(f"--out: {printable(self.root)} holds files (e.g. {printable(stranger.name)}) and is not "
                             f"a compressflow run directory; give a new or empty folder (e.g. "
                             f"{printable(self.root / 'runs' / 'NAME')})")

    def check_parts(self, parts: tuple[str, ...] = ("records", "attempts")) -> None:
        """Refuse a run directory that is not a directory, or whose parts are files or broken
        links (what a reader such as ``compressflow status`` checks before reading).

        Raises
        ------
        InputError
            Naming the path and how to fix it.
        """
        if self.root.exists() and not self.root.is_dir():
            raise InputError(f"--out: {str(self.root)!r} is not a directory; give the run directory of the study")
        for name in parts:
            path = self.root / name
            if path.is_symlink() and not path.exists():
                raise InputError(f"--out: {str(path)!r} is a broken symbolic link; compressflow keeps its {name} "
                                 f"there: remove the link or choose another --out")
            if path.exists() and not path.is_dir():
                raise InputError(f"--out: {str(path)!r} is a file, not a directory; compressflow keeps its {name} "
                                 f"there: move the file away or choose another --out")

    def lock(self) -> AbstractContextManager[None]:
        """Hold ``OUT/.lock`` for the whole run (:func:`compressflow.rundir.lock.hold`): two runs
        never work in one run directory at once. Once it holds it, the run directory's key is
        created if it has none, and what an earlier run killed while replacing the results
        store left (``.results.zarr.<hex>.tmp`` / ``.old``) is removed: no other run can be
        writing it then, and nothing is removed without the lock.

        Raises
        ------
        InputError
            Another run holds it, the filesystem has no locks, or ``OUT/.secret`` is not a key.
        """
        return self._held()

    @contextmanager
    def _held(self) -> Iterator[None]:
        with _lock.hold(self.root / ".lock", self.root):
            try:
                _secret.create_key(self.root)
            except _secret.KeyFileError as exc:
                raise InputError(f"--out: {exc}; remove it (the records it signed are then not trusted and "
                                 f"their tasks run again)") from None
            remove_stale_replacements(self.results)
            yield

    def state(self) -> RunState:
        """Whether a run holds the lock now, and when the latest run started (never creates
        the lock file).

        Raises
        ------
        InputError
            The lock cannot be opened (e.g. it is a directory).
        """
        return _lock.read_state(self.root / ".lock")

    def reject(self, key: str, why: str) -> Path:
        """Move the bad record of ``key`` (and its artifact, when that is ours and no longer
        matches its hash) to ``OUT/rejected/<key>[.n]/`` with ``why.txt``; return that folder.
        Nothing is deleted."""
        record = self.record(key)
        base = self.root / "rejected" / key
        target, n = base, 1
        while target.exists():
            target, n = base.with_name(f"{base.name}.{n}"), n + 1
        target.mkdir(parents=True)
        (target / "why.txt").write_text(why + "\n", encoding="utf-8")
        try:
            text = read_regular(record, RECORD_LIMIT, what="record").decode("utf-8")
            rec = LedgerEntry.from_json(text, self.root).record
            art = rec.artifact if rec is not None else None
        except Exception:  # unreadable record (or a FIFO): it has no artifact we can trust to be ours
            art = None
        if art is not None and is_within(art.path, self.root / "artifacts") and artifact_problem(art) is not None \
                and Path(art.path).exists():
            os.replace(art.path, target / Path(art.path).name)
        os.replace(record, target / record.name)
        return target
