"""A user op's source in its task keys: an edited plugin op gets new keys (so it runs again), a
built-in op's keys hold no source, ``key_source=False`` keeps version-only keys and the resume
plan warns once per op when it reuses records of an earlier source, and a worker refuses to
run a task whose keyed source is not the one it imported."""

from __future__ import annotations

import hashlib
import logging

import pytest

from compressflow._code_digest import code_digest
from compressflow.engine import execute
from compressflow.engine.graph import build_graph
from compressflow.engine.keys import canonical_json, dataset_options, op_code, task_key
from compressflow.engine.resume import plan_resume
from compressflow.plugins import import_plugins
from compressflow.registries import OPS
from compressflow.rundir import RunDir
from compressflow.spec import DataSpec, load_spec
from tests.support.records import edit_record, finished_record

OPS_FILE = '''
import xarray as xr

from compressflow import OPS, Record


def _helper(label):
    return float(label)


@OPS.register(data=None{facts})
def {name}(ctx, *, label: int = 0) -> Record:
    return Record(xr.Dataset({{"score": _helper(label)}}))
'''
#: the edit of the issue: the user adds a metric to the op
EDIT = ('return Record(xr.Dataset({"score": _helper(label)}))',
        'return Record(xr.Dataset({"score": _helper(label), "double": 2.0 * label}))')
DATA = {"dataset": "digits", "image_size": 8, "channels": 1}


def _plugin(tmp_path, name: str, facts: str = ""):
    path = tmp_path / f"{name}_ops.py"
    path.write_text(OPS_FILE.format(name=name, facts=facts))
    import_plugins([str(path)])
    return path


def _edit(path) -> None:
    text = path.read_text()
    assert EDIT[0] in text
    path.write_text(text.replace(*EDIT))


def _nodes(op: str, labels=(1,)):
    spec = {"name": "c", "data": DATA, "stages": {"mine": {"op": op, "sweep": {"label": list(labels)}},
                                                  "other": {"op": "wait", "params": {"label": 7}}}}
    graph = build_graph(load_spec(spec), "/tmp/out")
    return graph.stages["mine"], graph.stages["other"][0]


def _documented_key(op: str, label: int, code: str | None) -> str:
    """The key as the keys module's docstring writes it, computed here independently."""
    payload = {"format": 1, "op": op, "version": 1, "params": {"label": label},
               "data": dataset_options(DataSpec(**DATA).options()),
               "needs": {}}
    if code is not None:
        payload["code"] = code
    return f"{op}-{hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:32]}"


def test_editing_a_plugin_file_changes_its_ops_keys_only(tmp_path, fresh_names):
    path = _plugin(tmp_path, "scored")
    (before,), other = _nodes("scored")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert OPS.code("scored") == op_code("scored") == digest  # the whole file, as imported
    assert before.key == _documented_key("scored", 1, digest) and before.code == digest
    assert before.key != _documented_key("scored", 1, None)  # records from before keys held the source: rerun once
    _edit(path)
    (after,), other_after = _nodes("scored")
    new = hashlib.sha256(path.read_bytes()).hexdigest()
    assert after.key == _documented_key("scored", 1, new) != before.key and after.code == new
    assert other_after.key == other.key  # the built-in stage beside it keeps its key
    assert OPS.code("scored") == digest  # this process still holds the source it imported
    path.write_text(path.read_text().replace("return float(label)", "return float(label) + 1.0"))
    (helper_edited,), _ = _nodes("scored")
    assert helper_edited.key not in (before.key, after.key)  # a helper in the op's file counts


def test_in_a_package_the_file_that_defines_the_op_counts(tmp_path, fresh_names):
    pkg = tmp_path / "pkg_ops"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from . import ops\n")
    (pkg / "helpers.py").write_text("def double(x):\n    return 2.0 * x\n")
    (pkg / "ops.py").write_text("import xarray as xr\n\nfrom compressflow import OPS, Record\n\n"
                                "from .helpers import double\n\n\n@OPS.register(data=None)\n"
                                "def packaged(ctx, *, label: int = 0) -> Record:\n"
                                "    return Record(xr.Dataset({'score': double(label)}))\n")
    import_plugins([str(pkg)])
    (first,), _ = _nodes("packaged")
    assert first.code == hashlib.sha256((pkg / "ops.py").read_bytes()).hexdigest()
    (pkg / "helpers.py").write_text("def double(x):\n    return 3.0 * x\n")
    assert _nodes("packaged")[0][0].key == first.key  # another file of the package: not in the key
    (pkg / "ops.py").write_text((pkg / "ops.py").read_text() + "# edited\n")
    assert _nodes("packaged")[0][0].key != first.key


def test_builtin_ops_keys_hold_no_source():
    assert [op for op in OPS if op_code(op) is not None or OPS.code(op) is not None] == []
    # the key pinned in keys.task_key's docstring, written out again: no "code" entry
    text = ('{"data":{"dataset":"digits","image_size":8},"format":1,"needs":{},"op":"wait",'
            '"params":{"busy":false,"label":3,"seconds":0.5},"version":1}')
    key = task_key("wait", {"seconds": 0.5, "busy": False, "label": 3}, {"dataset": "digits", "image_size": 8}, {})
    assert key == f"wait-{hashlib.sha256(text.encode()).hexdigest()[:32]}" == "wait-22c8950dbf5ad6f639005889063be2bc"


def test_a_main_functions_own_source_counts_and_no_source_warns_once(fresh_names, caplog):
    def notebook_op(ctx, *, label: int = 0):
        return label

    notebook_op.__module__ = "__main__"  # as defined in a notebook cell: its own source, not this file
    import inspect
    assert code_digest(notebook_op) == hashlib.sha256(inspect.getsource(notebook_op).encode()).hexdigest()

    def no_source(ctx, *, label: int = 0):
        return label

    no_source.__module__ = "built_at_run_time"  # as made by code at run time: no module, no file
    no_source.__code__ = no_source.__code__.replace(co_filename="<generated>")
    OPS.register(no_source, data=None)
    with caplog.at_level(logging.WARNING, logger="compressflow.keys"):
        keys = [n.key for n in _nodes("no_source", labels=(1, 2))[0]]
        _nodes("no_source")
    assert keys[0] == _documented_key("no_source", 1, None)  # version only
    warned = [r.getMessage() for r in caplog.records if "no_source" in r.getMessage()]
    assert warned == [("compressflow: warning: op 'no_source': its source cannot be read, so an edit to it cannot "
                       "be detected; bump version= in @OPS.register when you change what it computes")]


def test_key_source_false_keeps_keys_and_warns_once_per_op_on_reuse(tmp_path, fresh_names, caplog):
    with pytest.raises(TypeError, match="key_source must be True or False, got 'no'"):
        OPS.register(lambda ctx: None, name="bad_flag", key_source="no")
    path = _plugin(tmp_path, "quiet", ", key_source=False")
    old = hashlib.sha256(path.read_bytes()).hexdigest()
    nodes, _ = _nodes("quiet", labels=(1, 2, 3))
    assert nodes[0].key == _documented_key("quiet", 1, None) and nodes[0].code == ""
    out = tmp_path / "out"
    for node in nodes:  # finished records of the source as it was, as a worker writes them
        edit_record(finished_record(out, key=node.key), lambda d: d.update(code=old))
    edit_record(out / "records" / f"{nodes[2].key}.json", lambda d: d.pop("code"))  # written before records kept it

    def plan() -> tuple[int, list[str]]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="compressflow.engine.resume"):
            reused = plan_resume(_nodes("quiet", labels=(1, 2, 3))[0], RunDir(out))
        return len(reused), [r.getMessage() for r in caplog.records]

    assert plan() == (3, [])  # unchanged source: reused silently
    _edit(path)
    assert [n.key for n in _nodes("quiet", labels=(1, 2, 3))[0]] == [n.key for n in nodes]  # same keys
    assert plan() == (3, [("compressflow: warning: op 'quiet': its source changed since 2 finished task(s) were "
                           "recorded; they are reused as they are — bump version= in @OPS.register (or delete their "
                           "records) to run them again")])


def test_a_worker_with_an_earlier_source_refuses_the_task(tmp_path, fresh_names, monkeypatch):
    monkeypatch.setattr(execute, "prepare", lambda: None)  # no torch import: the op needs none
    monkeypatch.setattr(execute, "current_meter", _NoMeter)
    path = _plugin(tmp_path, "fresh")
    (node,), _ = _nodes("fresh")
    entry = execute.execute_task(node, DATA, str(tmp_path))
    assert entry.ok and entry.code == node.code == OPS.code("fresh")
    assert RunDir(tmp_path).read_record(node.key).code == node.code  # the record keeps the source that ran
    _edit(path)  # this process (an in-process worker, or a long-lived one) still runs the first source
    (edited,), _ = _nodes("fresh")
    entry = execute.execute_task(edited, DATA, str(tmp_path))
    assert entry.status == "failed" and not (tmp_path / "records" / f"{edited.key}.json").exists()
    assert entry.error.startswith(f"op 'fresh' on worker {entry.worker} runs the source it imported earlier "
                                  f"(sha256 {node.code[:12]}...), not the one this task is keyed with "
                                  f"(sha256 {edited.code[:12]}...)")
    assert entry.error.endswith("restart the workers (Client.restart(), or a new Python session for an "
                                "in-process cluster) to run the edited op")


class _NoMeter:
    """The worker meter's stand-in: measures nothing."""

    def measure(self, name, on_sample=None):
        import contextlib

        from compressflow.energy import EnergyReading

        return contextlib.nullcontext(EnergyReading())

    def energy_so_far(self) -> float:
        return 0.0


MODEL_FILE = '''
from torch import nn

from compressflow import MODELS


@MODELS.register
def edited_mlp(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))
'''


def test_a_built_in_op_naming_an_edited_user_model_gets_new_keys(tmp_path, fresh_names):
    """``train`` is built in, but the model it builds is the user's: editing the model's file
    changes the keys of the tasks that name it (``uses``), and only theirs."""
    path = tmp_path / "user_models.py"
    path.write_text(MODEL_FILE)
    import_plugins([str(path)])
    spec = load_spec({"name": "m", "data": DATA, "stages": {
        "mine": {"op": "train", "params": {"model": "edited_mlp", "epochs": 2}},
        "builtin": {"op": "train", "params": {"model": "resnet18", "epochs": 2}}}})

    def keys():
        graph = build_graph(spec, tmp_path / "out")
        return graph.stages["mine"][0].key, graph.stages["builtin"][0].key

    mine, builtin = keys()
    params = build_graph(spec, tmp_path / "out").stages["mine"][0].params
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    payload = {"format": 1, "op": "train", "version": OPS.version("train"), "params": params,
               "data": dataset_options(DataSpec(**DATA).options()), "needs": {}, "uses": {"model:edited_mlp": digest}}
    assert mine == f"train-{hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:32]}"
    path.write_text(MODEL_FILE.replace("nn.Flatten(), ", "nn.Flatten(), nn.Dropout(0.1), "))
    edited, builtin_again = keys()
    assert edited != mine and builtin_again == builtin  # the user's model's tasks run again, the others not
