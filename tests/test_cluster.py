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


@pytest.mark.parametrize("name, extra", [("local-cuda", "cuda"), ("slurm", "slurm")])
def test_optional_cluster_kinds_name_their_extra(name, extra, capsys):
    spec = load_cluster_spec(Path(__file__).parent.parent / "clusters" / f"{name}.yaml")
    assert spec["kind"] == name
    module = {"cuda": "dask_cuda", "slurm": "dask_jobqueue"}[extra]
    try:
        __import__(module)
        pytest.skip(f"{module} is installed here")
    except ImportError:
        pass
    with pytest.raises(InputError, match=rf"^--cluster: kind '{name}' needs the optional package "
                                         rf"{module.replace('_', '-')}; install it with: pip install 'compressflow\[{extra}\]'$"):
        with connect(spec):
            pass
    from compressflow.cli import main

    assert main(["run", "tasks/quickstart.yaml", "--cluster", f"clusters/{name}.yaml", "--out", "/nonexistent/never"]) == 2


def test_slurm_job_script_requests_gpus_and_advertises_them(monkeypatch):
    """The SLURM kind's translation of gpus_per_job, checked against a stand-in class that
    records what dask-jobqueue would receive."""
    import sys
    import types

    seen = {}

    class FakeSLURM:
        def __init__(self, **kwargs):
            seen.update(kwargs)

        def scale(self, jobs):
            seen["jobs"] = jobs

    monkeypatch.setitem(sys.modules, "dask_jobqueue", types.SimpleNamespace(SLURMCluster=FakeSLURM))
    from compressflow.cluster_kinds import make_cluster

    make_cluster("slurm", {"jobs": 3, "gpus_per_job": 2, "cores": 8, "memory": "32GB"})
    assert seen["jobs"] == 3 and "--gpus=2" in seen["job_extra_directives"]
    assert seen["worker_extra_args"] == ["--resources", "GPU=2"] and seen["cores"] == 8


def test_tls_local_cluster_and_address_with_temporary_certificates(tmp_path):
    from distributed import LocalCluster
    from distributed.security import Security

    with connect({"kind": "local", "n_workers": 1, "dashboard_address": ":0", "security": "temporary"}) as client:
        assert client.scheduler.address.startswith("tls://127.0.0.1:")
        tree = compressflow.run(tiny_spec(), cluster=client, out=tmp_path / "tls", show_progress=False)
        assert (tree["tasks"]["status"] == "ok").all()
    sec = Security.temporary()
    with LocalCluster(n_workers=1, processes=False, protocol="tls://", security=sec, host="127.0.0.1",
                      dashboard_address=":0") as cluster:
        with connect({"kind": "address", "address": cluster.scheduler_address, "security": sec}) as client:
            assert client.submit(lambda: 41 + 1).result() == 42
        with pytest.raises(InputError, match=r"^--cluster: the scheduler at 'tls://.*' speaks TLS; give the cluster spec a 'security' entry"):
            with connect({"kind": "address", "address": cluster.scheduler_address, "timeout": 3}):
                pass


def test_embedded_cluster_listens_on_loopback_only():
    from distributed import Client

    from compressflow.cluster import local_cluster

    with local_cluster(n_workers=1) as cluster, Client(cluster) as client:  # the defaults, unchanged
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        assert client.dashboard_link.startswith("http://127.0.0.1:")
        workers = client.scheduler_info()["workers"]
        assert all(addr.startswith("tcp://127.0.0.1:") for addr in workers)
