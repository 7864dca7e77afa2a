"""Clusters that run: a scheduler address, TLS by default (and plain TCP as an explicit opt-out),
a GPU request no worker can meet, a port that never answers, workers that keep dying."""

import re
import socket
import threading
import time
from pathlib import Path

import pytest
import yaml

import compressflow
from compressflow.engine.cluster import connect
from compressflow.errors import InputError
from tests.support import tiny_spec


@pytest.mark.slow  # a real scheduler at an address
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


@pytest.mark.slow
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
        with pytest.raises(InputError, match=r"^--cluster: the scheduler at 'tls://.*' refused our TLS credentials"):
            with connect({"kind": "address", "address": cluster.scheduler_address, "timeout": 3, "security": "temporary"}):
                pass


def _run_in_background(spec, cluster, out, monkeypatch):
    """Start ``compressflow.run`` in a thread; return it, the ``LocalCluster`` it started
    (recorded by wrapping the real ``local_cluster``) once its first task runs, and the result."""
    import compressflow.engine.cluster as cluster_mod

    started, result = {}, {}
    real = cluster_mod.local_cluster

    def recording(**kwargs):
        started["cluster"] = real(**kwargs)
        return started["cluster"]

    monkeypatch.setattr(cluster_mod, "local_cluster", recording)

    def go():
        try:
            result["tree"] = compressflow.run(spec, cluster=cluster, out=out, show_progress=False)
        except BaseException as exc:  # noqa: BLE001 (reported by the test)
            result["error"] = exc

    runner = threading.Thread(target=go, daemon=True)
    runner.start()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and runner.is_alive() and not any((out / "attempts").glob("*.log")):
        time.sleep(0.1)
    assert "cluster" in started and runner.is_alive(), result.get("error")
    return runner, started["cluster"], result


def _attach_and_plant(address, marker, **client_kwargs):
    """What another local process does to take over a run: attach to the scheduler and run
    code in every worker and in the scheduler (here, code that writes ``marker``)."""
    from distributed import Client

    def plant(path=str(marker)):
        Path(path).write_text("taken over")

    try:
        with Client(address, timeout=5, **client_kwargs) as intruder:
            intruder.run(plant)
            intruder.run_on_scheduler(plant)
    except Exception as exc:  # noqa: BLE001 (the refusal is what the test expects)
        return exc
    return None

WAIT_SPEC = {"name": "wait", "stages": {"w": {"op": "wait", "params": {"seconds": 8.0}}}}


@pytest.mark.slow
def test_embedded_cluster_refuses_a_client_without_its_credentials_during_a_run(tmp_path, monkeypatch):
    """Security: the default embedded cluster speaks TLS with throw-away credentials, so
    another local process can neither attach nor run code while a run is in progress."""
    from distributed.security import Security

    out = tmp_path / "run"
    cluster = {"n_workers": 1, "dashboard_address": "127.0.0.1:0"}  # the default security
    runner, lc, result = _run_in_background(WAIT_SPEC, cluster, out, monkeypatch)
    address = lc.scheduler_address
    assert address.startswith("tls://127.0.0.1:")
    assert all(w.startswith("tls://127.0.0.1:") for w in lc.scheduler_info["workers"])
    assert lc.dashboard_link.startswith("http://127.0.0.1:")
    marker = tmp_path / "taken-over"
    refusals = {
        "no credentials": _attach_and_plant(address, marker),
        "its own throw-away certificate": _attach_and_plant(address, marker, security=Security.temporary()),
        "plain TCP to the TLS port": _attach_and_plant(address.replace("tls://", "tcp://"), marker),
    }
    assert runner.is_alive()  # all of it happened during the run
    assert all(isinstance(exc, (OSError, TypeError)) for exc in refusals.values()), refusals
    assert not marker.exists()
    runner.join(timeout=120)
    ledger = result["tree"]["tasks"].to_dataset()
    assert (ledger.status == "ok").all()
    assert all(str(w).startswith("tls://127.0.0.1:") for w in ledger.worker.values)
    assert float(result["tree"]["w"]["elapsed_s"]) >= 8.0
    assert (ledger.energy_kwh > 0).all()  # the energy plugin reached the TLS workers
    assert not marker.exists()


@pytest.mark.slow
def test_plain_tcp_is_an_explicit_opt_out_anyone_local_can_attach_to(tmp_path, monkeypatch):
    """The opt-out is real (and the refusals above are TLS's doing): with ``security: none``
    the scheduler is on tcp:// and a client without credentials runs code in it."""
    out = tmp_path / "run"
    spec = {**WAIT_SPEC, "stages": {"w": {"op": "wait", "params": {"seconds": 4.0}}}}
    runner, lc, result = _run_in_background(spec, {"n_workers": 1, "dashboard_address": "127.0.0.1:0",
                                                   "security": "none"}, out, monkeypatch)
    assert lc.scheduler_address.startswith("tcp://127.0.0.1:")
    marker = tmp_path / "taken-over"
    assert _attach_and_plant(lc.scheduler_address, marker) is None
    assert marker.read_text() == "taken over"
    runner.join(timeout=120)
    assert (result["tree"]["tasks"]["status"] == "ok").all()


def _silent_listener():
    """A port that accepts connections and never answers (a stalled process, another service)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted = []
    threading.Thread(target=lambda: [accepted.append(server.accept()) for _ in range(16)], daemon=True).start()
    return server, server.getsockname()[1]


@pytest.mark.slow
def test_a_port_that_never_answers_fails_within_the_timeout(tmp_path, capsys):
    """Dask's connect retries until its timeout but then waited for the handshake forever."""
    server, port = _silent_listener()
    outcome = {}

    def attach():
        t0 = time.monotonic()
        try:
            with connect(f"tcp://127.0.0.1:{port}", timeout=2):
                pass
        except InputError as exc:
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - t0

    thread = threading.Thread(target=attach, daemon=True)
    thread.start()
    thread.join(timeout=30)  # the old behaviour: still waiting here
    assert not thread.is_alive(), "connect() to a silent port did not give up within 30 s"
    assert re.match(rf"--cluster: cannot reach a Dask scheduler at 'tcp://127.0.0.1:{port}' within 2 s \(no Dask "
                    rf"handshake", str(outcome["error"]))
    assert outcome["seconds"] < 30
    from compressflow.cli import main

    (tmp_path / "c.yaml").write_text(f"kind: address\naddress: tcp://127.0.0.1:{port}\ntimeout: 2\n")
    t0 = time.monotonic()
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(WAIT_SPEC))
    assert main(["run", str(spec), "--cluster", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert time.monotonic() - t0 < 30
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("compressflow: error: --cluster: cannot reach a Dask scheduler")
    server.close()


@pytest.mark.slow
def test_run_whose_workers_keep_dying_stops_with_one_line(client, tmp_path, monkeypatch, capsys):
    """A worker killed at start by its memory limit is restarted by its nanny every 0.1 s and
    never reaches the scheduler: the run used to wait forever. The floor on memory_limit is
    lowered here to let the watchdog be tested on its own; a finished task's record is kept."""
    import compressflow.engine.cluster_options as options_mod
    import compressflow.engine.watchdog as watchdog_mod
    from compressflow.cli import main

    spec = {"name": "dying", "stages": {"a": {"op": "wait"}}}
    out = tmp_path / "run"
    compressflow.run(spec, cluster=client, out=out, show_progress=False)  # one finished task
    records = {p.name: p.read_bytes() for p in (out / "records").glob("*.json")}
    assert len(records) == 1
    spec["stages"]["b"] = {"op": "wait", "params": {"seconds": 1.0}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "c.yaml").write_text("n_workers: 1\nmemory_limit: 1MB\ndashboard_address: ':0'\n")
    monkeypatch.setattr(options_mod, "MIN_MEMORY_LIMIT", 0)
    monkeypatch.setitem(watchdog_mod.WATCHDOG, "no_worker_s", 3.0)
    t0 = time.monotonic()
    code = main(["run", str(tmp_path / "s.yaml"), "--cluster", str(tmp_path / "c.yaml"), "--out", str(out), "--quiet"])
    assert code == 2 and time.monotonic() - t0 < 150
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("compressflow: error: ")]
    assert len(err) == 1 and "Traceback" not in err[0]
    assert re.match(r"compressflow: error: cluster: stopped the run because its workers keep dying: no worker has "
                    r"been alive for \d+ s; .*Finished tasks are kept", err[0])
    assert {p.name: p.read_bytes() for p in (out / "records").glob("*.json")} == records
