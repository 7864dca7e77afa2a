"""Registries: register, look up and list names with their facts, one clear error (with the
choices) for an unknown or duplicate name, the built-ins and their checks, and the op authors'
contract (``compressflow.ops.__all__``)."""

import pytest

from compressflow import DATASETS, MODELS, OPS, Registry
from compressflow._registry import UnknownNameError


def test_register_get_list():
    reg = Registry("widget")

    @reg.register
    def beta():
        return "b"

    reg.register(lambda: "a", name="alpha")
    assert reg.list() == ["alpha", "beta"]
    assert reg.get("beta")() == "b"
    assert "alpha" in reg and "gamma" not in reg
    assert len(reg) == 2


def test_unknown_name_lists_choices():
    reg = Registry("widget")
    reg.register(lambda: 1, name="alpha")
    with pytest.raises(UnknownNameError) as err:
        reg.get("alpah")
    assert str(err.value) == "unknown widget 'alpah' (did you mean 'alpha'?); valid choices: alpha"
    with pytest.raises(UnknownNameError) as err:
        reg.get("zzz")
    assert str(err.value) == "unknown widget 'zzz'; valid choices: alpha"  # nothing close: no guess


def test_entries_carry_declared_facts_and_lists_filter_on_them():
    reg = Registry("model", facts={"task": "classification"})
    reg.register(lambda: 1, name="net")
    reg.register(lambda: 2, name="ssd", task="detection")
    assert dict(reg.info("net")) == {"task": "classification"} and reg.info("ssd")["task"] == "detection"
    assert reg.list(task="detection") == ["ssd"] and reg.list(task="classification") == ["net"]
    assert reg.unknown_message("ssd", task="classification") == (
        "model 'ssd' has task 'detection'; valid choices here: net")
    with pytest.raises(TypeError, match="a model is registered with no fact 'kind'; facts of a model: task"):
        reg.register(lambda: 3, name="x", kind="detection")
    assert "x" not in reg
    with pytest.raises(TypeError):
        reg.info("net")["task"] = "detection"  # read-only


def test_duplicate_name_raises():
    reg = Registry("widget")
    reg.register(lambda: 1, name="x")
    with pytest.raises(ValueError, match="widget 'x' is already registered"):
        reg.register(lambda: 2, name="x")


def test_project_registries_hold_builtins():
    import compressflow.spec  # noqa: F401

    assert {"train", "evaluate"} <= set(OPS.list())
    assert {"digits", "cifar10", "cifar100", "tinyimagenet", "synthetic"} <= set(DATASETS.list())
    assert {"resnet18", "mobilenet_v2", "vgg16", "wrn_16_1"} <= set(MODELS.list())


def test_op_registry_carries_a_code_version():
    from compressflow._registry import OpRegistry

    ops = OpRegistry("op")
    ops.register(lambda ctx: None, name="plain")

    @ops.register(version=3)
    def bumped(ctx):
        return None

    assert ops.version("plain") == 1 and ops.version("bumped") == 3
    assert ops.get("bumped") is bumped and ops.list() == ["bumped", "plain"]
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="version must be an integer >= 1"):
            ops.register(lambda ctx: None, name=f"bad{bad}", version=bad)
    assert "bad0" not in ops
    with pytest.raises(UnknownNameError, match="valid choices: bumped, plain"):
        ops.version("nope")
    with pytest.raises(ValueError, match="already registered"):
        ops.register(lambda ctx: None, name="plain", version=2)
    assert ops.version("plain") == 1
    assert all(OPS.version(op) >= 1 for op in OPS)


def test_op_registry_carries_the_spec_time_check():
    from compressflow._registry import OpRegistry

    ops = OpRegistry("op")

    def check(spec, name):
        raise AssertionError(name)

    @ops.register(version=2, check=check)
    def checked(ctx):
        return None

    ops.register(lambda ctx: None, name="unchecked")
    assert ops.check("checked") is check and ops.version("checked") == 2 and ops.get("checked") is checked
    assert ops.check("unchecked")(object(), "stage") is None  # a check that does nothing
    with pytest.raises(TypeError, match=r"check must be a function check\(spec, stage_name\), got 3"):
        ops.register(lambda ctx: None, name="bad", check=3)
    assert "bad" not in ops
    with pytest.raises(UnknownNameError, match="valid choices: checked, unchecked"):
        ops.check("nope")


def test_builtin_ops_register_their_checks():
    from compressflow.ops import check_module_names, check_replaceable_layers, check_schedule
    from compressflow.ops.distill import check_distill
    from compressflow.ops.prune import _check_attention
    from compressflow.ops.prune import _check_spec as check_prune
    from compressflow.ops.represent import _same_probe

    assert {op: OPS.check(op) for op in ("train", "distill", "prune", "svcca")} == {
        "train": check_schedule, "distill": check_distill, "prune": check_prune, "svcca": _same_probe}
    # the checks that build a model run when the study is submitted, not when the spec loads
    assert {op: OPS.model_check(op) for op in ("activations", "replace_layer", "craft", "capture", "prune")} == {
        "activations": check_replaceable_layers, "replace_layer": check_replaceable_layers,
        "craft": check_replaceable_layers, "capture": check_module_names, "prune": _check_attention}
    assert OPS.model_check("train")(object(), "stage") is None  # none registered: a check that does nothing
    assert {op: OPS.info(op)["data"] for op in ("train", "train_detection", "distill_detection", "wait")} == {
        "train": "classification", "train_detection": "detection", "distill_detection": "detection", "wait": None}
    for op in ("train", "distill", "prune", "craft", "svcca"):
        assert not hasattr(OPS.get(op), "check_spec")  # the registry holds it, not a hidden attribute


def test_load_spec_runs_the_registered_check(monkeypatch):
    from compressflow.spec import load_spec

    seen = []
    monkeypatch.setitem(OPS._info["wait"], "check", lambda spec, name: seen.append((spec.name, name)))
    load_spec({"name": "c", "stages": {"a": {"op": "wait"}, "b": {"op": "wait", "params": {"seconds": 0.0}}}})
    assert seen == [("c", "a"), ("c", "b")]


def test_stages_is_the_former_name_of_ops():
    import compressflow
    from compressflow import registries

    assert registries.STAGES is registries.OPS is compressflow.OPS is compressflow.STAGES
    assert {"OPS", "STAGES"} <= set(compressflow.__all__) and {"OPS", "STAGES"} <= set(registries.__all__)


def test_the_svcca_op_does_not_shadow_the_metric():
    import compressflow.metrics.similarity as similarity
    import compressflow.ops.represent as represent

    assert OPS.get("svcca") is represent.compare_representations
    assert similarity.svcca is not represent.compare_representations and callable(similarity.svcca)


def test_ops_all_is_the_op_authors_contract():
    import compressflow.ops as ops

    assert all(hasattr(ops, name) for name in ops.__all__)
    assert {"OPS", "OpContext", "Schedule", "Artifact", "Record", "Upstream", "check_schedule"} <= set(ops.__all__)
    assert ops.OPS is OPS
