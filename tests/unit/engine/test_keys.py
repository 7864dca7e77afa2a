"""Task keys: sha256 over a documented canonical JSON, independent of Dask, of dict order and of
data options the dataset ignores; an op's code version changes that op's key and downstream."""

from __future__ import annotations

import copy
import doctest
import hashlib

import numpy as np
import pytest

import compressflow
import compressflow._registry
import compressflow.engine.keys
from compressflow.engine.graph import build_graph
from compressflow.engine.keys import canonical_json, dataset_options, task_key
from compressflow.registries import OPS
from compressflow.spec import load_spec
from tests.support import tiny_spec


def _sha_key(op: str, text: str) -> str:
    """The documented key, computed here from a hand-written canonical JSON text."""
    return f"{op}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:32]}"


def test_key_is_sha256_of_the_documented_canonical_json():
    params = {"seconds": 0.5, "busy": False, "label": 3, "pair": (1, 2.0), "opts": {"b": None, "a": "x"}}
    data = {"dataset": "digits", "image_size": 8, "seed": 0, "root": "/ignored", "num_samples": 1000}
    needs = {"model": "train-0123", "blocks": ("a-1", "a-2")}
    text = ('{"data":{"dataset":"digits","image_size":8,"seed":0},"format":1,'
            '"needs":{"blocks":["a-1","a-2"],"model":"train-0123"},"op":"wait",'
            '"params":{"busy":false,"label":3,"opts":{"a":"x","b":null},"pair":[1,2],"seconds":0.5},"version":1}')
    key = task_key("wait", params, data, needs, version=1)
    assert key == _sha_key("wait", text)
    assert key == "wait-53ec90088c4b8abd48c614b305e806e7"  # pinned: a library upgrade must not move it
    assert task_key("wait", params, data, needs, version=2) != key


def test_canonical_json_rules():
    assert canonical_json({"b": 1, "a": [1.5, (2, 3)]}) == '{"a":[1.5,[2,3]],"b":1}'
    # numbers equal in Python have one text; bool stays distinct from int
    assert canonical_json([4.0, np.float32(0.5), np.int64(7), -0.0, True, np.bool_(False)]) == "[4,0.5,7,0,true,false]"
    assert canonical_json([0.1, 1e-05, 1e300, float("nan"), float("-inf")]) == \
        f"[0.1,1e-05,{int(1e300)},NaN,-Infinity]"
    assert canonical_json("é\n") == '"\\u00e9\\n"'
    with pytest.raises(TypeError, match="not a string"):
        canonical_json({1: "a"})
    with pytest.raises(TypeError, match="set"):
        canonical_json({"a": {1, 2}})


def test_dataset_options_follow_the_loader_signature():
    opts = load_spec(tiny_spec()).data.options()
    assert set(dataset_options(opts)) == {"dataset", "image_size", "channels", "val_fraction", "test_fraction",
                                          "seed", "augment"}
    synthetic = dataset_options({**opts, "dataset": "synthetic"})
    assert {"num_samples", "num_classes"} <= set(synthetic) and "root" not in synthetic
    assert "root" in dataset_options({**opts, "dataset": "cifar10"})
    assert "test_fraction" not in dataset_options({**opts, "dataset": "cifar10"})  # official test split


def test_graph_key_is_the_documented_key():
    spec = {"name": "k", "data": {"dataset": "digits", "image_size": 8, "channels": 1},
            "stages": {"w": {"op": "wait", "params": {"label": 2}}}}
    (node,) = build_graph(load_spec(spec), "/tmp/out").stages["w"]
    text = ('{"data":{"augment":null,"channels":1,"dataset":"digits","image_size":8,"seed":0,"test_fraction":0.2,'
            '"val_fraction":0.15},"format":1,"needs":{},"op":"wait","params":{"busy":false,"label":2,"seconds":0},'
            '"version":1}')
    assert node.key == _sha_key("wait", text)


def _keys(spec) -> dict[tuple[str, frozenset], str]:
    graph = build_graph(load_spec(spec), "/tmp/out")
    return {(n.stage, frozenset(n.point.items())): n.key for nodes in graph.stages.values() for n in nodes}


def test_ignored_data_options_do_not_change_keys_used_ones_do():
    base = _keys(tiny_spec())
    spec = tiny_spec()
    spec["data"].update(num_samples=50, num_classes=3, root="/nowhere")  # digits takes none of these
    assert _keys(spec) == base
    spec["data"]["seed"] = 1
    assert set(_keys(spec).values()).isdisjoint(base.values())
    synthetic = tiny_spec()
    synthetic["data"]["dataset"] = "synthetic"
    other = copy.deepcopy(synthetic)
    other["data"]["num_samples"] = 500
    assert set(_keys(synthetic).values()).isdisjoint(_keys(other).values())


def test_keys_do_not_depend_on_dict_order():
    spec = tiny_spec(sweep={"seed": [0, 1], "lr": [0.1, 0.05]})
    spec["stages"]["teacher"]["params"].update(momentum=0.8, milestones=[0.5])
    flipped = copy.deepcopy(spec)
    teacher = flipped["stages"]["teacher"]
    teacher["params"] = dict(reversed(list(teacher["params"].items())))
    teacher["sweep"] = dict(reversed(list(teacher["sweep"].items())))
    flipped["data"] = dict(reversed(list(flipped["data"].items())))
    flipped["stages"] = dict(reversed(list(flipped["stages"].items())))
    assert _keys(flipped) == _keys(spec) and len(set(_keys(spec).values())) == 8


def test_version_bump_changes_that_op_and_downstream_only(monkeypatch):
    spec = tiny_spec()
    spec["stages"]["other"] = {"op": "wait"}
    base = _keys(spec)
    monkeypatch.setitem(OPS._info["train"], "version", 2)
    bumped = _keys(spec)
    changed = {stage for (stage, _), key in bumped.items() if base[(stage, _)] != key}
    assert changed == {"teacher", "test"}


def test_examples_in_docstrings():
    for module in (compressflow.engine.keys, compressflow._registry):
        assert doctest.testmod(module).failed == 0, module.__name__
