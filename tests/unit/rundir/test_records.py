"""Trusting a persisted record: its digest is mandatory and keyed with the run directory's key
(a deleted digest, a recomputed plain sha256 or another run directory's record is refused), its
artifact lies inside the run directory, and a record, artifact or attempt log that is a FIFO or
a link to ``/dev/zero`` is refused at once, in one line."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil

import pytest

from compressflow.errors import FileRefused, InputError
from compressflow.rundir import RunDir
from compressflow.rundir.files import sha256_file
from compressflow.rundir.records import RecordError, read_record
from tests.support.records import edit_record, finished_record
from tests.support.special_files import SPECIAL, make_special, promptly


def _plain_sha256(data: dict) -> str:
    """The digest earlier versions wrote: sha256 of the canonical JSON, no key."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()).hexdigest()


def test_a_signed_record_round_trips(tmp_path):
    path = finished_record(tmp_path / "run", accuracy=0.875)
    digest = json.loads(path.read_text())["digest"]
    assert digest.startswith("hmac-sha256:") and len(digest) == len("hmac-sha256:") + 64
    entry = read_record(path)
    assert entry.ok and float(entry.record.metrics["accuracy"]) == 0.875
    assert entry.energy["cpu_kwh"] == 1e-5 and entry.record.artifact.path == str(tmp_path / "run/artifacts/train-abc.pt")
    assert RunDir(tmp_path / "run").finished("train-abc") is not None


def test_a_deleted_digest_is_refused(tmp_path):
    path = finished_record(tmp_path)
    data = json.loads(path.read_text())
    del data["digest"]
    data["record"]["metrics"]["data_vars"]["accuracy"]["data"] = 0.99
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match=r"^has no digest \(written by an earlier version, or edited by hand\); "
                                          r"it is not trusted$"):
        read_record(path)
    assert RunDir(tmp_path).finished("train-abc") is None


def test_an_edited_field_with_a_recomputed_plain_sha256_is_refused(tmp_path):
    path = finished_record(tmp_path)
    data = json.loads(path.read_text())
    del data["digest"]
    data["energy"]["cpu_kwh"] = 0.0
    path.write_text(json.dumps({**data, "digest": _plain_sha256(data)}))
    with pytest.raises(RecordError, match=r"^has a digest not signed with a run directory key \(an earlier "
                                          r"version's plain sha256, or edited by hand\); it is not trusted$"):
        read_record(path)
    path.write_text(json.dumps({**data, "digest": "hmac-sha256:é"}))  # not ASCII: compared as no signature
    with pytest.raises(RecordError, match=r"^has a digest not signed with a run directory key"):
        read_record(path)
    # the same edit, with the plain hash dressed up as a signature
    path.write_text(json.dumps({**data, "digest": "hmac-sha256:" + _plain_sha256(data)}))
    with pytest.raises(RecordError, match=r"^content does not match its digest"):
        read_record(path)


def test_a_record_of_another_run_directory_is_refused(tmp_path):
    theirs = finished_record(tmp_path / "theirs")
    ours = finished_record(tmp_path / "ours", key="train-other")  # ours has its own key
    assert (tmp_path / "theirs/.secret").read_text() != (tmp_path / "ours/.secret").read_text()
    shutil.copy(theirs, ours.parent / theirs.name)
    shutil.copy(tmp_path / "theirs/artifacts/train-abc.pt", tmp_path / "ours/artifacts/train-abc.pt")
    with pytest.raises(RecordError, match=r"^content does not match its digest \(edited by hand, torn, or signed "
                                          r"in another run directory\)$"):
        read_record(ours.parent / theirs.name)
    assert read_record(ours).ok  # its own record still reads


def test_records_without_the_run_directorys_key_are_refused(tmp_path):
    path = finished_record(tmp_path)
    (tmp_path / ".secret").unlink()
    with pytest.raises(RecordError, match=r"^cannot be checked: the run directory has no key '.*/\.secret' "
                                          r"\(records of earlier versions are not trusted\)$"):
        read_record(path)
    assert RunDir(tmp_path).finished("train-abc") is None


@pytest.mark.parametrize("where", ["absolute", "relative"])
def test_an_artifact_outside_the_run_directory_is_refused_even_with_its_hash(tmp_path, where):
    run = tmp_path / "run"
    path = finished_record(run)
    victim = tmp_path / "victim.pt"  # as /etc/hostname, or ../victim.pt: a file the record may not name
    victim.write_bytes(b"not yours")
    stored = str(victim) if where == "absolute" else "../victim.pt"
    edit_record(path, lambda d: d["record"]["artifact"].update(path=stored, sha256=sha256_file(victim)))
    with pytest.raises(RecordError, match=r"^checkpoint '.*victim\.pt' lies outside the run directory '.*/run'$"):
        read_record(path)
    RunDir(run).reject("train-abc", "outside")
    assert victim.read_bytes() == b"not yours"  # rejecting the record never moves someone's file


def test_an_artifact_link_leading_out_of_the_run_directory_or_in_a_loop_is_refused(tmp_path):
    run = tmp_path / "run"
    path = finished_record(run)
    art = run / "artifacts" / "train-abc.pt"
    (tmp_path / "victim.pt").write_bytes(art.read_bytes())  # same bytes, same hash
    art.unlink()
    art.symlink_to(tmp_path / "victim.pt")
    with pytest.raises(RecordError, match=r"lies outside the run directory"):
        read_record(path)
    art.unlink()
    art.symlink_to(art)  # a loop: cannot be resolved, so it is not inside
    with pytest.raises(RecordError, match=r"lies outside the run directory"):
        read_record(path)
    assert os.path.lexists(RunDir(run).reject("train-abc", "loop") / "train-abc.json")


@pytest.mark.parametrize("kind", SPECIAL)
def test_a_record_file_that_is_not_a_regular_file_is_refused_at_once(tmp_path, kind):
    path = finished_record(tmp_path)
    make_special(path, kind)
    with pytest.raises(RecordError) as info:
        promptly(lambda: read_record(path))
    assert str(info.value) == f"is {SPECIAL[kind]}, not a regular file"
    assert promptly(lambda: RunDir(tmp_path).finished("train-abc")) is None
    moved = promptly(lambda: RunDir(tmp_path).reject("train-abc", "special"))  # the resume plan's move aside
    assert os.path.lexists(moved / "train-abc.json") and not os.path.lexists(path)
    assert (moved / "why.txt").read_text() == "special\n"


@pytest.mark.parametrize("kind", SPECIAL)
@pytest.mark.parametrize("check_hash", [True, False])
def test_an_artifact_that_is_not_a_regular_file_is_refused_at_once(tmp_path, kind, check_hash):
    path = finished_record(tmp_path)
    art = make_special(tmp_path / "artifacts" / "train-abc.pt", kind)
    if kind == "dev-zero":  # a link out of the run directory is refused for that first
        expected = r"^checkpoint '.*train-abc\.pt' lies outside the run directory"
    else:
        expected = rf"^checkpoint '{re.escape(str(art))}' is a FIFO, not a regular file$"
    with pytest.raises(RecordError, match=expected):
        promptly(lambda: read_record(path, check_hash=check_hash))


@pytest.mark.parametrize("kind", SPECIAL)
def test_hashing_a_file_or_tree_with_a_special_file_is_refused_at_once(tmp_path, kind):
    from compressflow.rundir.files import artifact_digest

    store = tmp_path / "cache.zarr"
    (store / "c").mkdir(parents=True)
    (store / "zarr.json").write_text("{}")
    make_special(store / "c" / "0", kind)
    with pytest.raises(FileRefused, match=rf"^zarr '{re.escape(str(store))}/c/0' is {SPECIAL[kind]}, not a regular file$"):
        promptly(lambda: artifact_digest(store, what="zarr"))
    with pytest.raises(FileRefused, match=rf"is {SPECIAL[kind]}, not a regular file$"):
        promptly(lambda: artifact_digest(store / "c" / "0"))


def test_a_tree_digest_is_unchanged_by_the_regular_file_reader(tmp_path):
    from compressflow.rundir.files import artifact_digest

    store = tmp_path / "s.zarr"
    (store / "b").mkdir(parents=True)
    (store / "b" / "x").write_bytes(b"1")
    (store / "a.json").write_bytes(b"2")
    expected = hashlib.sha256()
    for rel, data in (("a.json", b"2"), ("b/x", b"1")):
        expected.update(f"{rel}:{hashlib.sha256(data).hexdigest()}".encode())
    assert artifact_digest(store) == expected.hexdigest()


@pytest.mark.parametrize("kind", SPECIAL)
def test_an_attempt_log_that_is_not_a_regular_file_is_refused_at_once(tmp_path, kind):
    run = RunDir(tmp_path)
    make_special(tmp_path / "attempts" / "train-abc.log", kind)
    with pytest.raises(InputError, match=rf"^--out: attempt log '.*train-abc\.log' is {SPECIAL[kind]}, not a "
                                         rf"regular file; move it away \(it only records attempts\)$"):
        promptly(lambda: run.attempts("train-abc"))
    with pytest.raises(FileRefused, match=rf"^attempt log '.*train-abc\.log' is {SPECIAL[kind]}, not a regular file$"):
        promptly(lambda: run.attempt_log("train-abc", "w").start())  # a worker's append


def test_a_run_directory_key_that_is_not_a_key_is_refused(tmp_path):
    path = finished_record(tmp_path)
    (tmp_path / ".secret").write_text("not hex\n")
    with pytest.raises(RecordError, match=r"^cannot be checked \(run directory key '.*/\.secret' does not hold 64 "
                                          r"hex digits\)$"):
        read_record(path)
    make_special(tmp_path / ".secret", "fifo")
    with pytest.raises(RecordError, match=r"^cannot be checked \(run directory key '.*/\.secret' is a FIFO"):
        promptly(lambda: read_record(path))
    with pytest.raises(InputError, match=r"^--out: run directory key '.*/\.secret' is a FIFO, not a regular file; "
                                         r"remove it \(the records it signed are then not trusted"):
        promptly(lambda: RunDir(tmp_path).lock().__enter__())


def test_the_key_is_private_and_racing_creators_end_with_one(tmp_path, monkeypatch):
    from compressflow.rundir import secret

    first = secret.create_key(tmp_path)
    assert len(first) == 32 and (tmp_path / ".secret").stat().st_mode & 0o777 == 0o600
    assert secret.create_key(tmp_path) == first == secret.read_key(tmp_path)
    # a second creator that looked before the first had written: its own key loses
    real, looks = secret.read_key, []

    def late(root):
        looks.append(root)
        return None if len(looks) == 1 else real(root)

    monkeypatch.setattr(secret, "read_key", late)
    assert secret.create_key(tmp_path) == first and len(looks) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".secret"]  # its temporary file is gone
    assert os.stat(tmp_path / ".secret").st_nlink == 1
