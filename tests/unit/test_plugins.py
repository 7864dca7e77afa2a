"""User extensions: built-ins and entry points loaded on first lookup, plugins of a run
(``--plugin``, the spec's ``plugins:``, ``run(plugins=...)``) resolved and imported on the
client, with one clear error for each way a plugin can be wrong."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import stat
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from compressflow import plugins, registries
from compressflow._registry import Registry
from compressflow.engine.shipping import ShipPlugin
from compressflow.errors import FileRefused, SpecError
from compressflow.ops.signature import stage_signature
from compressflow.plugins import PluginError
from compressflow.registries import BLOCKS, DATASETS, LOSSES, MODELS, OPS, SUMMARIES
from compressflow.spec import load_spec
from tests.support.plugin_files import USER_OPS
from tests.support.special_files import SPECIAL, make_special, promptly


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


def test_an_edited_plugin_is_imported_again_by_the_client_and_by_a_worker_that_has_the_first(fresh_names, tmp_path):
    """A second run in one session (a notebook, a long-lived cluster) after the user edited the
    plugin: its names are registered afresh from the edit, not refused as registered twice, and not
    left at the first version."""
    pkg = tmp_path / "edit_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from edit_pkg import ops  # noqa\n")
    (pkg / "ops.py").write_text(USER_OPS)
    [first] = plugins.import_plugins([str(pkg)])
    worker = SimpleNamespace(local_directory=str(tmp_path / "w"), address="tcp://w:1")
    shipped_first = ShipPlugin(first)
    shipped_first.setup(worker)  # an in-process worker: the client's module, nothing imported again
    before, code = OPS.get("fit_probe"), OPS.code("fit_probe")
    assert "lr" not in stage_signature("fit_probe").params
    [again] = plugins.import_plugins([str(pkg)])  # unchanged: the same module, nothing forgotten
    assert OPS.get("fit_probe") is before
    (pkg / "ops.py").write_text(USER_OPS.replace("steps: int = 20,", "steps: int = 20, lr: float = 0.5,"))
    [edited] = plugins.import_plugins([str(pkg)])
    assert OPS.get("fit_probe") is not before and OPS.code("fit_probe") != code
    assert "lr" in stage_signature("fit_probe").params and "tiny_mlp" in MODELS  # the file's model is back too
    # a worker process that imported the first version: the edit, shipped, is imported from its own copy
    plugins.imported("edit_pkg", shipped_first.digest)
    ship = ShipPlugin(edited)
    assert ship.digest != shipped_first.digest
    ship.setup(worker)
    assert Path(sys.modules["edit_pkg.ops"].__file__) == tmp_path / "w" / "compressflow-plugins" / ship.digest / "edit_pkg" / "ops.py"
    assert "lr" in stage_signature("fit_probe").params and not plugins.edited_since_import("edit_pkg", ship.digest)


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


# --- special files in a plugin: refused at once, one line naming them -------------------------

@pytest.mark.parametrize("kind", list(SPECIAL))
def test_a_plugin_file_that_is_not_a_regular_file_is_refused(tmp_path, kind):
    path = make_special(tmp_path / "special_ops.py", kind)
    with pytest.raises(FileRefused) as info:
        promptly(lambda: plugins.import_plugins([str(path)], field="--plugin"))
    assert str(info.value) == f"--plugin: plugin file {str(path)!r} is {SPECIAL[kind]}, not a regular file"


@pytest.mark.parametrize("inside", ["helpers.py", "__init__.py", "data/table.csv"])
def test_a_fifo_in_a_plugin_folder_is_refused_before_anything_is_imported(fresh_names, tmp_path, inside):
    pkg = tmp_path / "fifo_pkg"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("import fifo_pkg.helpers  # noqa\n")
    (pkg / "helpers.py").write_text("")
    path = make_special(pkg / inside, "fifo")
    with pytest.raises(FileRefused) as info:
        promptly(lambda: plugins.import_plugins([str(pkg)], field="--plugin"))
    assert str(info.value) == f"--plugin: plugin file {str(path)!r} is a FIFO, not a regular file"
    assert "fifo_pkg" not in sys.modules


def test_a_link_out_of_a_plugin_folder_is_refused(fresh_names, tmp_path):
    """A link to /dev/zero, or to someone's private file: neither is read nor shipped."""
    secret = tmp_path / "secret.txt"
    secret.write_text("token")
    secret.chmod(0o600)
    pkg = tmp_path / "leaky_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for target in (secret, Path("/dev/zero")):
        link = pkg / "notes.txt"
        link.unlink(missing_ok=True)
        link.symlink_to(target)
        with pytest.raises(FileRefused) as info:
            promptly(lambda: plugins.import_plugins([str(pkg)], field="--plugin"))
        assert str(info.value) == (f"--plugin: plugin file {str(link)!r} is a symbolic link to {str(target)!r}, "
                                   f"outside the folder {str(pkg)!r}; copy what the plugin needs into the folder")


def test_a_fifo_bytecode_cache_does_not_block_the_import(fresh_names, tmp_path):
    (tmp_path / "cached_ops.py").write_text("VALUE = 7\n")
    pyc = make_special(Path(importlib.util.cache_from_source(str(tmp_path / "cached_ops.py"))), "fifo")
    with pytest.raises(FileRefused, match=rf"^plugins\[0\]: plugin file {re.escape(repr(str(pyc)))} is a FIFO"):
        promptly(lambda: plugins.import_plugins(["cached_ops.py"], tmp_path))


def test_shipped_files_keep_their_mode_and_links_inside_the_folder_are_followed(fresh_names, tmp_path):
    pkg = tmp_path / "moded_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "private.py").write_text("KEY = 1\n")
    (pkg / "private.py").chmod(0o600)
    (pkg / "run.sh").write_text("#!/bin/sh\n")
    (pkg / "run.sh").chmod(0o755)
    (pkg / "alias.py").symlink_to(pkg / "private.py")
    [plugin] = plugins.import_plugins([str(pkg)])
    ship = ShipPlugin(plugin)
    ship.setup(SimpleNamespace(local_directory=str(tmp_path / "w"), address="tcp://w:1"))
    ship.setup(SimpleNamespace(local_directory=str(tmp_path / "w"), address="tcp://w:1"))  # over read-only files
    shipped = tmp_path / "w" / "compressflow-plugins" / ship.digest / "moded_pkg"
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in shipped.iterdir()}
    assert modes == {"__init__.py": 0o666 & ~_umask(), "private.py": 0o600, "alias.py": 0o600, "run.sh": 0o755}
    assert (shipped / "alias.py").read_text() == "KEY = 1\n" and not (shipped / "alias.py").is_symlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
