"""Cluster selection: spec files, scheduler addresses, clear errors."""

import re
import socket
import threading
import time
from pathlib import Path

import pytest
import yaml

import compressflow
from compressflow.engine.cluster import connect, load_cluster_spec
from compressflow.errors import InputError, SpecError
from tests.support import tiny_spec

ROOT = Path(__file__).resolve().parents[2]


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


@pytest.mark.parametrize("name, extra", [("local-cuda", "cuda"), ("slurm", "slurm")])
def test_optional_cluster_kinds_name_their_extra(name, extra, capsys):
    spec = load_cluster_spec(Path(__file__).resolve().parents[2] / "clusters" / f"{name}.yaml")
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
    from compressflow.engine.cluster_kinds import make_cluster

    make_cluster("slurm", {"jobs": 3, "gpus_per_job": 2, "cores": 8, "memory": "32GB"})
    assert seen["jobs"] == 3 and "--gpus=2" in seen["job_extra_directives"]
    assert seen["worker_extra_args"] == ["--resources", "GPU=2"] and seen["cores"] == 8


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


def test_local_cluster_options_are_checked_before_anything_starts():
    from compressflow.engine.cluster import local_cluster

    with pytest.raises(SpecError, match=r"^--cluster: n_workers: 1\.5 is not allowed; give a whole number"):
        local_cluster(n_workers=1.5)
    with pytest.raises(SpecError, match=r"^--cluster: memory_limit: '1MB' is not allowed; .* at least 512\.00 MiB"):
        with connect({"kind": "local", "memory_limit": "1MB"}):
            pass
    with pytest.raises(SpecError, match=r"^--cluster: security: False is not allowed; give temporary"):
        local_cluster(security=False)


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


def test_watchdog_trips_on_repeated_deaths_and_on_no_worker():
    """The watchdog's decisions on the scheduler's worker events (the real-cluster case is
    test_run_whose_workers_keep_dying_stops_with_one_line)."""
    from compressflow.engine.watchdog import WorkerWatchdog

    dog = WorkerWatchdog(client=None, deaths=3, window_s=10.0, no_worker_s=5.0)
    add = {"action": "add-worker"}
    for w in ("a", "b"):
        dog._on_event((0, {**add, "worker": w}))
    dog._on_event((0, {"action": "remove-worker", "worker": "a", "expected": True}))  # a graceful retire
    dog._on_event((0, {"action": "remove-worker", "worker": "b", "expected": False}))
    now = time.monotonic()
    assert dog.verdict(now) is None and dog.verdict(now + 4) is None  # one death, no worker for < 5 s
    assert re.fullmatch(r"no worker has been alive for [56] s", dog.verdict(now + 5.2))
    for i in range(3):
        dog._on_event((0, {**add, "worker": f"r{i}"}))
        dog._on_event((0, {"action": "remove-worker", "worker": f"r{i}", "expected": False}))
        dog._on_event((0, {**add, "worker": f"s{i}"}))
    now = time.monotonic()
    assert dog.verdict(now) == "4 workers died within 10 s (more than 3) without finishing their tasks"
    assert dog.verdict(now + 11) is None  # the deaths left the window; workers s0..s2 are alive


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


@pytest.mark.parametrize("amount", [float("nan"), float("inf"), 2])
def test_resource_request_no_worker_can_meet_is_refused_not_waited_for(amount):
    """A NaN request compared below every offer (NaN < x is False), so the run submitted a
    task no worker could take and waited forever; it is now refused like any unmet request."""
    from types import SimpleNamespace

    from compressflow.engine.submission import check_resources as _check_resources

    graph = SimpleNamespace(stages={"teacher": [SimpleNamespace(resources={"GPU": amount})]})
    with pytest.raises(InputError, match=r"^stages\.teacher\.resources\.GPU: needs .* but no worker offers that much"):
        _check_resources({"tls://127.0.0.1:1": {"resources": {"GPU": 1}}}, graph)
    _check_resources({"tls://127.0.0.1:1": {"resources": {"GPU": 1}}},
                     SimpleNamespace(stages={"teacher": [SimpleNamespace(resources={"GPU": 1})]}))


_DEFAULTS = ("import dask, compressflow.engine.cluster\n"
             "print([dask.config.get(k) for k in ('distributed.scheduler.worker-saturation', "
             "'distributed.worker.profile.enabled', 'distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_')])")


@pytest.mark.parametrize("env, yaml_config, expected", [
    ({}, None, [1.0, False, None]),  # compressflow's defaults
    ({"DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION": "2.5"}, None, [2.5, False, None]),  # the user's variable wins
    ({}, {"distributed": {"worker": {"profile": {"enabled": True}}}}, [1.0, True, None]),  # the user's YAML wins
    ({"DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION": "1.1"}, None, [1.1, False, None]),  # also Dask's own value
])
def test_tuned_worker_settings_are_dask_defaults_the_user_overrides(tmp_path, env, yaml_config, expected):
    import os
    import subprocess
    import sys

    environ = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    environ["DASK_CONFIG"] = str(tmp_path)  # no ~/.config/dask of the machine's user
    if yaml_config is not None:
        (tmp_path / "user.yaml").write_text(yaml.safe_dump(yaml_config))
    environ["PYTHONPATH"] = os.pathsep.join([str(Path(compressflow.__file__).parents[1]), environ.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", _DEFAULTS], env={**environ, **env}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == repr(expected)


def test_embedded_cluster_settings_apply_in_this_process():
    import dask

    from compressflow.engine.cluster import WORKER_CONFIG

    assert {k: dask.config.get(k) for k in WORKER_CONFIG} == WORKER_CONFIG
