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
    assert str(err.value) == "unknown widget 'alpah'; valid choices: alpha"


def test_duplicate_name_raises():
    reg = Registry("widget")
    reg.register(lambda: 1, name="x")
    with pytest.raises(ValueError, match="widget 'x' is already registered"):
        reg.register(lambda: 2, name="x")


def test_project_registries_hold_builtins():
    import compressflow.engine.spec  # noqa: F401

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
