"""A real run's results say what produced them: versions, git commit, and every worker's machine."""

import json
import os
import socket

import dask
import pytest
import torch

import compressflow


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
