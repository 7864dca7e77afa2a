"""The results' root attrs say what produced them: versions, git commit, client and worker machines."""

import json
import os
import socket
import subprocess

import dask
import pytest
import torch

import compressflow
from compressflow.engine.provenance import git_commit, machine


def _git(repo, *args):
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=repo, check=True,
                   capture_output=True)


def test_git_commit_names_head_and_dirty_tracked_files(tmp_path):
    assert git_commit(tmp_path) == ""  # not a work tree
    (tmp_path / "a.txt").write_text("1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "a.txt")
    _git(tmp_path, "commit", "-qm", "one")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert len(head) == 40 and git_commit(tmp_path) == head
    (tmp_path / "untracked.txt").write_text("x\n")
    assert git_commit(tmp_path) == head  # untracked files do not make it dirty
    (tmp_path / "a.txt").write_text("2\n")
    assert git_commit(tmp_path) == head + "+dirty"


def test_machine_describes_this_process():
    m = machine()
    assert m["host"] == socket.gethostname() and m["cpus"] == os.cpu_count()
    assert isinstance(m["cpu"], str) and m["cpu"] and isinstance(m["gpus"], list)


@pytest.mark.slow  # a run on the cluster fixture
def test_run_records_versions_commit_and_every_workers_machine(client, tmp_path, monkeypatch):
    from tests.support import tiny_spec

    monkeypatch.chdir(tmp_path)  # not a git work tree: the commit is ""
    tree = compressflow.run(tiny_spec(), cluster=client, out=tmp_path / "out", show_progress=False)
    for t in (tree, compressflow.open_results(tmp_path / "out")):  # also as stored in Zarr
        versions = json.loads(t.attrs["versions"])
        assert versions["torch"] == torch.__version__.split("+")[0] or versions["torch"] == torch.__version__
        assert versions["dask"] == dask.__version__ and versions["compressflow"] == compressflow.__version__
        assert t.attrs["git_commit"] == ""
        workers = json.loads(t.attrs["workers"])
        assert set(workers) == set(client.scheduler_info(n_workers=-1)["workers"])
        assert all(w["host"] == socket.gethostname() and w["cpus"] == os.cpu_count() for w in workers.values())
        assert json.loads(t.attrs["client"])["host"] == socket.gethostname()
