"""Blockwise bad input: layer names are checked against the teacher's architecture (built on the
meta device) when the study is submitted, before any task (one line; ``load_spec`` stays
torch-free and leaves them to :func:`compressflow.spec.check_models`)."""

from __future__ import annotations

import copy
import re

import pytest
from torch import nn

from compressflow import SpecError, load_spec
from compressflow.registries import MODELS
from compressflow.spec import check_models
from tests.support.specs import BLOCKWISE

DATA = {"dataset": "digits", "image_size": 8, "channels": 1}


def checked(spec: dict):
    """``load_spec`` and the checks ``submit`` adds (which build the models)."""
    loaded = load_spec(spec)
    check_models(loaded)
    return loaded


def _with(path: list, value) -> dict:
    spec = copy.deepcopy(BLOCKWISE)
    node = spec
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return spec


@pytest.mark.parametrize("path, value, pattern", [
    (["stages", "blocks", "sweep", "layer"], ["layer1.0.conv1", "layer9.0.conv1"],
     r"^stages\.blocks\.sweep\.layer: 'layer9\.0\.conv1' is not a replaceable layer of resnet18; valid: conv1, layer1\.0\.conv1, "),
    (["stages", "blocks", "params", "layer"], "fc",
     r"^stages\.blocks\.sweep\.layer: 'fc' is not|^stages\.blocks\.params\.layer: 'fc' is not a replaceable layer of resnet18"),
    (["stages", "cache", "params", "layers"], ["layer1.0.conv1", "layer1.0.bn1"],
     r"^stages\.cache\.params\.layers: 'layer1\.0\.bn1' is not a replaceable layer of resnet18; valid: conv1, "),
    (["stages", "cache", "params", "exclude"], ["layer1.0.conv1"],
     r"^stages\.cache\.params: layers/exclude leave no layer of resnet18 to replace; keep at least one$"),
    (["stages", "blocks", "sweep", "layer"], ["layer1.0.conv2"],
     r"^stages\.blocks\.sweep\.layer: 'layer1\.0\.conv2' is not in the activation cache of stage 'cache' "
     r"\(it holds: layer1\.0\.conv1\); add it to that stage's layers$"),
    (["stages", "student", "params", "max_drop"], 1.5,
     r"^stages\.student\.params\.max_drop: Input should be less than or equal to 1 \(got 1\.5\)$"),
    (["stages", "student", "params", "max_drop"], -0.1,
     r"^stages\.student\.params\.max_drop: Input should be greater than or equal to 0 \(got -0\.1\)$"),
])
def test_bad_blockwise_spec(path, value, pattern):
    spec = _with(path, value)
    if path[-1] == "layer" and path[-2] == "params":
        del spec["stages"]["blocks"]["sweep"]
    with pytest.raises(SpecError) as err:
        checked(spec)
    assert re.search(pattern, str(err.value)), str(err.value)
    if "layer" in pattern:  # a layer name needs the model built: loading the spec alone does not know it
        load_spec(spec)


def test_vgg_layer_names_follow_the_teacher_width_and_model():
    spec = _with(["stages", "teacher", "params", "model"], "vgg16")
    spec["stages"]["cache"]["params"]["layers"] = ["features.3"]
    spec["stages"]["blocks"]["sweep"]["layer"] = ["features.3"]
    assert checked(spec).stages["blocks"].sweep["layer"] == ["features.3"]
    with pytest.raises(SpecError, match=r"'layer1\.0\.conv1' is not a replaceable layer of vgg16; valid: features\.0, features\.3"):
        checked(_with(["stages", "teacher", "params", "model"], "vgg16"))


@pytest.fixture
def flat_model():
    @MODELS.register(name="flat_mlp")
    def flat_mlp(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))

    yield "flat_mlp"
    MODELS._items.pop("flat_mlp")


def test_model_without_replaceable_layer(flat_model):
    with pytest.raises(SpecError, match=r"^stages\.cache\.needs\.model: model 'flat_mlp' has no replaceable layer "
                                        r"\(a conv with kernel > 1x1 and groups = 1\); blockwise ops need a convolutional teacher$"):
        checked(_with(["stages", "teacher", "params", "model"], flat_model))
