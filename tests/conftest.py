"""Shared fixtures: one real in-process-spawned Dask LocalCluster for the session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def client():
    """A real two-worker LocalCluster (processes, one thread each), as the runner builds it,
    but on plain TCP (``security="none"``): tests pass its address to the CLI as a string, which
    carries no TLS credentials. The TLS default is tested in tests/test_cluster.py."""
    from distributed import Client

    from compressflow.engine.cluster import local_cluster

    with local_cluster(n_workers=2, dashboard_address=":0", security="none") as cluster, Client(cluster) as c:
        yield c


def tiny_spec(**stage_overrides):
    """A two-stage pipeline small enough to run in seconds."""
    teacher = {"op": "train", "params": {"model": "resnet18", "width": 0.125, "epochs": 1, "batch_size": 128}}
    teacher.update(stage_overrides)
    return {
        "name": "tiny",
        "data": {"dataset": "digits", "image_size": 8, "channels": 1},
        "stages": {"teacher": teacher, "test": {"op": "evaluate", "needs": {"model": "teacher"}}},
    }
