"""Provenance parts: the git commit (HEAD and dirty tracked files) and this process's machine."""

import os
import socket
import subprocess

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
