"""Cluster selection before anything starts: spec files, scheduler addresses, cluster-kind
options and extras, SLURM job scripts, the death watchdog and worker settings; clear errors."""

import re
import time
from pathlib import Path

import pytest
import yaml

import compressflow
from compressflow.engine.cluster import connect, load_cluster_spec
from compressflow.errors import InputError, SpecError
from tests.support import ROOT


def test_shipped_local_spec_loads():
    spec = load_cluster_spec(ROOT / "clusters" / "local.yaml")
    assert spec["kind"] == "local" and spec["host"] == "127.0.0.1" and spec["threads_per_worker"] == 1


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("kind: kubernetes\n", r"kind 'kubernetes' .* valid kinds: local, address"),
        ("kind: local\nworkers: 3\n", r"unknown option 'workers' \(did you mean 'n_workers'\?\) for a local cluster; valid: n_workers"),
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


@pytest.mark.parametrize("name, extra", [("local-cuda", "cuda"), ("slurm", "slurm")])
def test_optional_cluster_kinds_name_their_extra(name, extra, capsys):
    spec = load_cluster_spec(ROOT / "clusters" / f"{name}.yaml")
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


def test_local_cluster_options_are_checked_before_anything_starts():
    from compressflow.engine.cluster import local_cluster

    with pytest.raises(SpecError, match=r"^--cluster: n_workers: 1\.5 is not allowed; give a whole number"):
        local_cluster(n_workers=1.5)
    with pytest.raises(SpecError, match=r"^--cluster: memory_limit: '1MB' is not allowed; .* at least 512\.00 MiB"):
        with connect({"kind": "local", "memory_limit": "1MB"}):
            pass
    with pytest.raises(SpecError, match=r"^--cluster: security: False is not allowed; give temporary"):
        local_cluster(security=False)


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
