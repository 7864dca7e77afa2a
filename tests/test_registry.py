import pytest

from compressflow import DATASETS, MODELS, STAGES, Registry
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
    import compressflow.spec  # noqa: F401

    assert {"train", "evaluate"} <= set(STAGES.list())
    assert {"digits", "cifar10", "cifar100", "tinyimagenet", "synthetic"} <= set(DATASETS.list())
    assert {"resnet18", "mobilenet_v2", "vgg16", "wrn_16_1"} <= set(MODELS.list())
