"""User extensions: built-ins and entry points loaded on first lookup, plugins of a run
(``--plugin``, the spec's ``plugins:``, ``run(plugins=...)``) imported on the client and on
every worker — including a worker that joins mid-run — of a cluster started with the
``dask`` CLI whose Python path does not hold the user's file."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from compressflow import plugins, registries
from compressflow._registry import Registry
from compressflow.spec import load_spec
from compressflow.errors import SpecError
from compressflow.ops.signature import stage_signature
from compressflow.engine.shipping import ShipPlugin
from compressflow.plugins import PluginError
from compressflow.registries import BLOCKS, DATASETS, LOSSES, MODELS, OPS, SUMMARIES

ROOT = Path(__file__).resolve().parents[1]
DASK = str(Path(sys.executable).parent / "dask")

#: a user's op and model, as a notebook user would write them in a file of their own
USER_OPS = '''
import os
import time

import torch
import xarray as xr
from torch import nn

from compressflow import MODELS, OPS, Record


@MODELS.register
def tiny_mlp(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    hidden = max(1, round(32 * width))
    return nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(in_channels * 16, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


@OPS.register
def fit_probe(ctx, *, model: str = "tiny_mlp", steps: int = 20, seed: int = 0, gate: str = "") -> Record:
    """Fit the user's model with full-batch SGD; wait for the ``gate`` file first, if any."""
    deadline = time.time() + 120
    while gate and not os.path.exists(gate) and time.time() < deadline:
        time.sleep(0.1)
    torch.manual_seed(seed)
    data = ctx.splits()
    net = MODELS.get(model)(num_classes=data.num_classes, in_channels=data.in_channels)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(net(data.train.x), data.train.y).backward()
        opt.step()
    with torch.no_grad():
        accuracy = (net(data.test.x).argmax(1) == data.test.y).float().mean().item()
    return Record(xr.Dataset({
        "accuracy": accuracy,
        "params": sum(p.numel() for p in net.parameters()),
        "shipped": float("compressflow-plugins" in __file__),  # imported from the copy the plugin wrote
    }))
'''
#: tiny_mlp's parameters on 1-channel digits: (16 * 32 + 32) + (32 * 10 + 10)
TINY_MLP_PARAMS = 874


# --- built-ins and entry points -----------------------------------------------------------

def test_registry_calls_its_loader_on_first_lookup_until_it_has_finished():
    calls = []

    def loader():
        calls.append(len(calls))
        return len(calls) >= 2  # the first call is "still loading" (a lookup from inside the load)

    reg = Registry("thing", loader=loader)
    reg.register(len, name="size")  # registering does not load
    assert calls == []
    assert "size" in reg and calls == [0]
    assert reg.list() == ["size"] and calls == [0, 1]
    assert reg.get("size") is len and len(reg) == 1 and list(reg) == ["size"] and calls == [0, 1]


@pytest.mark.slow
def test_builtins_are_registered_by_the_first_lookup_in_a_fresh_process():
    code = ("import sys; from compressflow.registries import OPS, SUMMARIES, BLOCKS; "
            "print(sorted({'train', 'prune', 'svcca'} & set(OPS)), 'kd_comparison' in SUMMARIES, len(BLOCKS) > 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["['prune',", "'svcca',", "'train']", "True", "True"]


def _entry_points(monkeypatch, *values: str) -> None:
    eps = [importlib.metadata.EntryPoint(name=f"ep{i}", value=v, group=registries.ENTRY_POINT_GROUP)
           for i, v in enumerate(values)]
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None: [e for e in eps if e.group == group])
    _unload(monkeypatch)


def _unload(monkeypatch) -> None:
    """As in a fresh process: nothing loaded, every registry loads on its next lookup."""
    registries._state.update(done=False, error=None)
    for reg in (BLOCKS, DATASETS, LOSSES, MODELS, OPS, SUMMARIES):
        monkeypatch.setattr(reg, "_loader", registries.load)


def test_entry_points_register_on_first_lookup(fresh_names, monkeypatch, tmp_path):
    (tmp_path / "ep_models.py").write_text(
        "from compressflow.registries import MODELS\n@MODELS.register\ndef ep_model(num_classes=10):\n    return 7\n")
    (tmp_path / "ep_hook.py").write_text(
        "from compressflow.registries import LOSSES\n"
        "def register():\n    LOSSES.register(lambda *a: 0.5, name='ep_loss')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _entry_points(monkeypatch, "ep_models", "ep_hook:register", "ep_models")  # a module listed twice loads once
    assert "ep_model" not in MODELS._items
    assert MODELS.get("ep_model")() == 7
    assert LOSSES.get("ep_loss")() == 0.5 and "hkd" in LOSSES


def test_a_failing_entry_point_is_one_clear_error_every_time(fresh_names, monkeypatch):
    _entry_points(monkeypatch, "no_such_plugin_module_xyz")
    for _ in range(2):  # not a silently missing name on the second lookup
        with pytest.raises(PluginError, match=r"^plugin entry point 'ep0' = 'no_such_plugin_module_xyz' "
                                              r"\(group 'compressflow.plugins'\) failed to load: "
                                              r"ModuleNotFoundError: No module named 'no_such_plugin_module_xyz'; "
                                              r"fix or uninstall that package$") as info:
            OPS.get("train")
        assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_an_installed_distribution_entry_point_is_found(fresh_names, monkeypatch, tmp_path):
    """A real dist-info on sys.path, as ``pip install`` leaves it."""
    dist = tmp_path / "cf_demo-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: cf-demo\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[compressflow.plugins]\ndemo = cf_demo_ops\n")
    (tmp_path / "cf_demo_ops.py").write_text(
        "from compressflow.registries import DATASETS\n@DATASETS.register\ndef demo_set(**kw):\n    return 'demo'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _unload(monkeypatch)
    assert DATASETS.get("demo_set")() == "demo"


# --- plugins of a run: spec key, validation, import --------------------------------------

def _spec(**extra) -> dict:
    return {"name": "p", "data": {"dataset": "digits", "image_size": 8, "channels": 1},
            "stages": {"probe": {"op": "fit_probe", "params": {"model": "tiny_mlp", "steps": 2}}}, **extra}


def test_spec_plugins_are_relative_to_the_spec_folder(fresh_names, tmp_path, monkeypatch):
    study = tmp_path / "study"
    study.mkdir()
    (study / "user_ops.py").write_text(USER_OPS)
    (study / "spec.yaml").write_text(yaml.safe_dump(_spec(plugins=["user_ops.py"])))
    monkeypatch.chdir(tmp_path)  # not the spec's folder
    spec = load_spec(study / "spec.yaml")
    assert spec.plugins == (str(study / "user_ops.py"),)
    assert stage_signature("fit_probe").params == ("model", "steps", "seed", "gate")
    assert load_spec(study / "spec.yaml").plugins == spec.plugins  # loading again does not re-register


def test_spec_without_its_plugin_names_the_unknown_op():
    with pytest.raises(SpecError, match=r"^stages\.probe\.op: unknown op 'fit_probe'; valid choices: "):
        load_spec(_spec())


@pytest.mark.parametrize("entry, expect", [
    ("nope.py", r"^plugins\[0\]: no file 'nope\.py' \(looked for '.*/nope\.py'\); give an existing \.py file$"),
    ("notes.txt", r"^plugins\[0\]: 'notes\.txt' is not a \.py file; give a \.py file, a package folder "),
    ("folder", r"^plugins\[0\]: 'folder' is a folder but not a package \(it has no __init__\.py\); "),
    ("sub/none", r"^plugins\[0\]: no file or folder 'sub/none' \(looked for "),
    ("my-ops", r"^plugins\[0\]: 'my-ops' is not a file, a folder or a module name; "),
    ("my-ops.py", r"^plugins\[0\]: 'my-ops\.py' cannot be imported as a module named 'my-ops'; rename it to a "
                  r"Python identifier, e.g\. 'my_ops'$"),
    ("no_such_module_xyz", r"^plugins\[0\]: no module named 'no_such_module_xyz' here; install it, or give "),
    (3, r"^plugins\[0\]: expected a \.py file, a package folder \(with __init__\.py\) or a module name, got 3$"),
])
def test_bad_plugin_entries(entry, expect, tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "my-ops.py").write_text("")
    (tmp_path / "folder").mkdir()
    with pytest.raises(SpecError, match=expect):
        plugins.import_plugins([entry], tmp_path)


def test_a_plugin_whose_import_raises_names_it_and_chains_the_cause(fresh_names, tmp_path):
    (tmp_path / "boom.py").write_text("raise RuntimeError('no GPU here')\n")
    with pytest.raises(PluginError, match=r"^--plugin: importing 'boom\.py' failed: RuntimeError: no GPU here$") as info:
        plugins.import_plugins(["boom.py"], tmp_path, field="--plugin")
    assert isinstance(info.value.__cause__, RuntimeError) and "boom" not in sys.modules


def test_a_second_file_with_a_taken_module_name_is_refused(fresh_names, tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "same_name_ops.py").write_text("")
    plugins.import_plugins(["a/same_name_ops.py"], tmp_path)
    with pytest.raises(SpecError, match=r"^plugins\[1\]: a module named 'same_name_ops' is already imported from "):
        plugins.import_plugins(["a/same_name_ops.py", "b/same_name_ops.py"], tmp_path)


def test_module_name_plugin_is_imported(fresh_names, tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "site_ops_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "ops.py").write_text(USER_OPS)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    [plugin] = plugins.import_plugins(["site_ops_pkg.ops"])
    assert (plugin.kind, plugin.module, plugin.path) == ("module", "site_ops_pkg.ops", None)
    spec = load_spec(_spec(plugins=["site_ops_pkg.ops"]))
    assert spec.plugins == ("site_ops_pkg.ops",) and "fit_probe" in OPS
    # on a worker: nothing travels, the module is imported there
    del sys.modules["site_ops_pkg.ops"]
    ship = ShipPlugin(plugin)
    assert ship.files == {}
    OPS._items.pop("fit_probe"), MODELS._items.pop("tiny_mlp")
    ship.setup(SimpleNamespace(local_directory=str(tmp_path / "w"), address="tcp://w:1"))
    assert "fit_probe" in OPS


def test_a_package_folder_is_written_to_the_worker_and_imported_from_there(fresh_names, tmp_path):
    pkg = tmp_path / "user_pkg"
    (pkg / "__pycache__").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from user_pkg.models import *  # noqa\nfrom user_pkg import ops  # noqa\n")
    (pkg / "models.py").write_text("")
    (pkg / "ops.py").write_text(USER_OPS)
    (pkg / "__pycache__" / "ops.cpython-311.pyc").write_bytes(b"stale")
    [plugin] = plugins.import_plugins(["user_pkg"], tmp_path)
    assert plugin.kind == "package" and "fit_probe" in OPS
    ship = ShipPlugin(plugin)
    assert sorted(ship.files) == ["user_pkg/__init__.py", "user_pkg/models.py", "user_pkg/ops.py"]
    for name in [m for m in sys.modules if m == "user_pkg" or m.startswith("user_pkg.")]:
        del sys.modules[name]
    OPS._items.pop("fit_probe"), MODELS._items.pop("tiny_mlp")
    worker_dir = tmp_path / "worker"
    ship.setup(SimpleNamespace(local_directory=str(worker_dir), address="tcp://w:1"))
    shipped = worker_dir / "compressflow-plugins" / ship.digest / "user_pkg" / "ops.py"
    assert shipped.read_text() == USER_OPS
    assert Path(sys.modules["user_pkg.ops"].__file__) == shipped and "fit_probe" in OPS
    ship.setup(SimpleNamespace(local_directory=str(worker_dir), address="tcp://w:1"))  # again: no duplicate


def test_cli_names_a_bad_plugin_option(tmp_path, capsys):
    from compressflow.cli import main

    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(_spec()))
    assert main(["run", str(tmp_path / "spec.yaml"), "--plugin", str(tmp_path / "gone.py")]) == 2
    assert capsys.readouterr().err.startswith("compressflow: error: --plugin: no file ")


# --- end to end: a cluster started with the dask CLI ---------------------------------------

class DaskCLI:
    """``dask scheduler`` and ``dask worker`` processes on 127.0.0.1 (plain TCP), run from a
    folder and with a Python path that do not hold the user's files."""

    def __init__(self, home: Path, pythonpath: list[str]) -> None:
        self.home = home
        home.mkdir()
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath), "OMP_NUM_THREADS": "1"}
        self.procs: list[subprocess.Popen] = []
        info = home / "scheduler.json"
        self._start([DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                     "--scheduler-file", str(info)])
        deadline = time.time() + 60
        while not info.exists() and time.time() < deadline:
            time.sleep(0.2)
        self.address = json.loads(info.read_text())["address"]

    def _start(self, argv: list[str]) -> None:
        self.procs.append(subprocess.Popen(argv, cwd=self.home, env=self.env,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def start_worker(self) -> None:
        self._start([DASK, "worker", self.address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                     "--host", "127.0.0.1"])

    def workers(self, n: int) -> set[str]:
        from distributed import Client

        with Client(self.address, timeout=30) as c:
            c.wait_for_workers(n, timeout=120)
            return set(c.scheduler_info(n_workers=-1)["workers"])

    def close(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture
def dask_cli(tmp_path):
    pythonpath = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    cluster = DaskCLI(tmp_path / "cluster", pythonpath)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.mark.slow
def test_user_op_and_model_reach_cli_started_workers_and_one_that_joins_mid_run(dask_cli, fresh_names, tmp_path):
    from compressflow import open_results
    from compressflow.cli import main

    user = tmp_path / "user"
    user.mkdir()
    (user / "user_ops.py").write_text(USER_OPS)
    assert not any(str(user) in p for p in dask_cli.env["PYTHONPATH"].split(os.pathsep))
    for _ in range(2):
        dask_cli.start_worker()
    first_two = dask_cli.workers(2)
    out, gate = tmp_path / "run", tmp_path / "gate"
    spec = _spec()
    spec["stages"] = {
        # a built-in op building the user's model on a worker
        "teacher": {"op": "train", "params": {"model": "tiny_mlp", "width": 1.0, "epochs": 1, "batch_size": 128}},
        # the user's op; its tasks wait at the gate until the third worker has joined
        "probe": {"op": "fit_probe", "params": {"model": "tiny_mlp", "steps": 20, "gate": str(gate)},
                  "sweep": {"seed": list(range(8))}},
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    joined: dict[str, set[str]] = {}

    def join_once_the_run_is_live() -> None:
        from compressflow.rundir import RunDir

        deadline = time.time() + 300  # the probes wait at the gate, holding both workers, until it opens
        while not RunDir(out).state().live and time.time() < deadline:
            time.sleep(0.1)
        dask_cli.start_worker()
        joined["third"] = dask_cli.workers(3) - first_two
        gate.write_text("open")

    helper = threading.Thread(target=join_once_the_run_is_live, daemon=True)
    helper.start()
    code = main(["run", str(tmp_path / "spec.yaml"), "--cluster", dask_cli.address, "--out", str(out), "--quiet",
                 "--plugin", str(user / "user_ops.py")])
    helper.join(timeout=60)
    assert code == 0
    tree = open_results(out)
    ledger = tree["tasks"].to_dataset()
    assert (ledger.status == "ok").all() and ledger.sizes["task"] == 9
    probe = tree["probe"].to_dataset()
    assert (probe.params == TINY_MLP_PARAMS).all()
    assert (probe.shipped == 1.0).all()  # every worker imported the shipped copy
    assert float(probe.accuracy.min()) > 0.3  # 20 full-batch steps on digits: well above chance (0.1)
    assert int(tree["teacher"].to_dataset().params) == TINY_MLP_PARAMS
    [third] = joined["third"]
    workers = {str(w) for w, stage in zip(ledger.worker.values, ledger.stage.values) if stage == "probe"}
    assert third in workers, (third, workers)  # the worker that joined mid-run ran the user op
