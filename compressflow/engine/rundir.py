"""The run directory (``--out``): one class owns its layout.

::

    OUT/
      .lock                  held (flock) by the run working here; names its holder
      records/<key>.json     one finished task each (LedgerEntry.to_json); a re-run reuses them
      attempts/<key>.log     every start / energy sample / end of a task (engine.attempts)
      artifacts/<key><sfx>   what tasks produced (checkpoints, Zarr stores)
      rejected/<key>[.n]/    records (and their artifacts) refused for reuse, with why.txt
      results.zarr           the results tree (compressflow.results)
"""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from compressflow.errors import InputError

__all__ = ["RunDir"]


@dataclass(frozen=True)
class RunDir:
    """Paths, lock, writable check and rejection of bad records of one run directory.

    Small and picklable: the graph sends it to every task.

    Parameters
    ----------
    root : path
        The run directory.

    Examples
    --------
    >>> RunDir("runs/quickstart").record("train-abc").as_posix()
    'runs/quickstart/records/train-abc.json'
    """

    root: Path

    #: what compressflow keeps under ``--out``; each must be a directory (or absent)
    PARTS = ("records", "attempts", "artifacts", "rejected")

    def __init__(self, root: Path | str) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def results(self) -> Path:
        return self.root / "results.zarr"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    def record(self, key: str) -> Path:
        """Where the finished record of task ``key`` is kept."""
        return self.root / "records" / f"{key}.json"

    def attempt_log(self, key: str) -> Path:
        return self.root / "attempts" / f"{key}.log"

    def artifact(self, key: str, suffix: str) -> Path:
        """Path for an artifact of task ``key`` (its folder is created)."""
        path = self.root / "artifacts" / f"{key}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write_record(self, key: str, text: str) -> Path:
        """Persist a finished record atomically: readers see no record or the whole one.

        Not fsync'd: a kill of the worker (or of the whole run) leaves the record intact, as
        the kernel holds the written pages; what a power cut could tear, the digest check of
        :func:`~compressflow.engine.records.read_record` refuses, and the task runs again.
        A flush per task would cost a disk round trip for every task (5 ms on a loaded local
        disk, tens on network filesystems), more than the engine's whole per-task budget.
        """
        path = self.record(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def check_writable(self) -> None:
        """Create the directory if needed and refuse, before any task runs, one that cannot be
        written or whose parts (:attr:`PARTS`) are files or broken links.

        Raises
        ------
        InputError
            Naming the path and how to fix it.
        """
        out = self.root
        try:
            out.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=out):
                pass
        except OSError as exc:
            raise InputError(f"--out: cannot write to {str(out)!r} ({exc.strerror}); choose a writable directory") from None
        for name in self.PARTS:
            path = out / name
            if path.is_symlink() and not path.exists():
                raise InputError(f"--out: {str(path)!r} is a broken symbolic link; compressflow keeps its {name} "
                                 f"there: remove the link or choose another --out")
            if path.exists() and not path.is_dir():
                raise InputError(f"--out: {str(path)!r} is a file, not a directory; compressflow keeps its {name} "
                                 f"there: move the file away or choose another --out")

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold ``OUT/.lock`` (``fcntl.flock``) for the whole run, so two runs never work in one
        run directory at once; the file names the holder. The kernel drops the lock when its
        process ends, however it ends, so a crashed run leaves nothing to clean up (the file
        stays, with the last holder's details).

        Raises
        ------
        InputError
            Another run holds it, or the filesystem has no locks.
        """
        path = self.lock_file
        try:
            fh = open(path, "a+", encoding="utf-8")
        except OSError as exc:
            raise InputError(f"--out: cannot open the run lock {str(path)!r} ({exc.strerror}); "
                             f"remove it if it is not a file, or choose another --out") from None
        try:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = " ".join(fh.read(500).split()) or "unknown"
                raise InputError(f"--out: {str(self.root)!r} is in use by another compressflow run ({holder}); "
                                 f"wait for it to finish or choose another --out") from None
            except OSError as exc:
                raise InputError(f"--out: cannot lock {str(path)!r} ({exc.strerror}); "
                                 f"use a run directory on a filesystem with file locks") from None
            fh.seek(0)
            fh.truncate()
            started = datetime.now(timezone.utc).isoformat(timespec="seconds")
            fh.write(f"pid {os.getpid()} on host {socket.gethostname()}, started {started}\n")
            fh.flush()
            yield
        finally:
            fh.close()  # releases the lock

    def reject(self, key: str, why: str) -> Path:
        """Move the bad record of ``key`` (and its artifact, when that is ours and no longer
        matches its hash) to ``OUT/rejected/<key>[.n]/`` with ``why.txt``; return that folder.
        Nothing is deleted."""
        from compressflow.engine.records import LedgerEntry
        from compressflow.ops.artifacts import artifact_problem

        record = self.record(key)
        base = self.root / "rejected" / key
        target, n = base, 1
        while target.exists():
            target, n = base.with_name(f"{base.name}.{n}"), n + 1
        target.mkdir(parents=True)
        (target / "why.txt").write_text(why + "\n", encoding="utf-8")
        try:
            rec = LedgerEntry.from_json(record.read_text(encoding="utf-8"), self.root).record
            art = rec.artifact if rec is not None else None
        except Exception:  # unreadable record: it has no artifact we can trust to be ours
            art = None
        if art is not None and _inside(Path(art.path), self.root / "artifacts") and artifact_problem(art) is not None \
                and Path(art.path).exists():
            os.replace(art.path, target / Path(art.path).name)
        os.replace(record, target / record.name)
        return target


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True
