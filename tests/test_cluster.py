"""Cluster selection: spec files, scheduler addresses, clear errors."""

from pathlib import Path

import pytest

import compressflow
from compressflow.cluster import connect, load_cluster_spec
from compressflow.errors import InputError, SpecError
from conftest import tiny_spec

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_local_spec_loads():
    spec = load_cluster_spec(ROOT / "clusters" / "local.yaml")
    assert spec["kind"] == "local" and spec["host"] == "127.0.0.1" and spec["threads_per_worker"] == 1


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("kind: kubernetes\n", r"kind 'kubernetes' .* valid kinds: local, address"),
        ("kind: local\nworkers: 3\n", r"unknown option 'workers' for a local cluster; valid: n_workers"),
        ("- a\n- b\n", r"must be a mapping with a 'kind' key"),
        ("kind: local\n  bad: [\n", r"is not valid YAML"),
    ],
)
def test_bad_cluster_spec(tmp_path, text, pattern):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=pattern):
        load_cluster_spec(path)


def test_unreachable_scheduler_is_a_clear_input_error():
    with pytest.raises(InputError, match=r"cannot reach a Dask scheduler at 'tcp://127.0.0.1:9' within 1 s"):
        with connect("tcp://127.0.0.1:9", timeout=1):
            pass


def test_neither_file_nor_address():
    with pytest.raises(InputError, match=r"neither a cluster spec file nor a scheduler address"):
        with connect("my-cluster"):
            pass


def test_run_against_a_scheduler_address(client, tmp_path):
    address = client.scheduler.address
    assert address.startswith("tcp://127.0.0.1:")
    tree = compressflow.run(tiny_spec(), cluster=address, out=tmp_path, show_progress=False)
    assert set(tree["tasks"]["worker"].values) <= set(client.scheduler_info()["workers"])
    assert (tree["tasks"]["status"] == "ok").all()


def test_gpu_request_without_gpu_workers_refused_before_running(client, tmp_path):
    spec = tiny_spec(resources={"GPU": 1})
    with pytest.raises(InputError, match=r"stages\.teacher\.resources\.GPU: needs 1 but no worker offers that much"):
        compressflow.run(spec, cluster=client, out=tmp_path, show_progress=False)
    assert not (tmp_path / "records").exists()
