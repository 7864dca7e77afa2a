"""Replacement blocks keep every replaced layer's output shape and cost far fewer MACs."""

import pytest
import torch
from torch import nn

from compressflow.metrics.flops import macs_per_sample, param_count
from compressflow.nn import blocks  # noqa: F401  (registers)
from compressflow.nn.blocks import make_block
from compressflow.nn.models import build_model
from compressflow.nn.surgery import layer_io, replaceable_layers
from compressflow.registries import BLOCKS

MODELS = ["resnet18", "vgg16", "mobilenet_v2", "shufflenet_v2", "wrn_16_1"]


def test_registry_has_the_four_candidates():
    assert set(BLOCKS.list()) == {"ds2", "ds3", "ds2_skip", "ds3_skip"}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("block", ["ds2", "ds3", "ds2_skip", "ds3_skip"])
def test_block_output_shape_equals_layer(model, block):
    net = build_model(model, num_classes=10, in_channels=3, width=0.25).eval()
    x = torch.randn(2, 3, 16, 16)
    for name in replaceable_layers(net):
        inp, out = layer_io(net, name, x)
        conv = net.get_submodule(name)
        b = make_block(block, conv).eval()
        assert b(inp).shape == out.shape, (model, name)


def test_ds2_structure_and_negative_outputs():
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
    b = make_block("ds2", conv)
    dw1, pw1, bn1, relu1 = b.layers[0]
    assert dw1.groups == 8 and dw1.stride == (2, 2) and dw1.kernel_size == (3, 3)
    assert pw1.in_channels == 8 and pw1.out_channels == 16 and pw1.kernel_size == (1, 1)
    assert isinstance(relu1, nn.ReLU)
    assert len(b.layers[1]) == 3  # last layer: no ReLU, the target is a pre-activation
    assert (b(torch.randn(4, 8, 8, 8)) < 0).any()
    assert len(make_block("ds2", conv, final_relu=True).layers[1]) == 4


def test_make_block_names_a_layer_that_is_not_a_conv():
    from compressflow.errors import InputError

    with pytest.raises(InputError, match=r"^block 'ds2': the layer it replaces is a Linear, not a Conv2d$"):
        make_block("ds2", nn.Linear(4, 4))


def test_blocks_are_cheaper_than_the_convs_they_replace():
    conv = nn.Conv2d(64, 64, 3, padding=1)
    block = make_block("ds2", conv)
    assert macs_per_sample(block, (64, 16, 16)) < 0.3 * macs_per_sample(conv, (64, 16, 16))
    assert param_count(block) < 0.3 * param_count(conv)


def test_replaceable_layers_include_exclude():
    net = build_model("vgg16", num_classes=10, width=0.25)
    layers = replaceable_layers(net)
    assert len(layers) == 13  # VGG16's 13 3x3 convs
    assert replaceable_layers(net, include=layers[:2]) == layers[:2]
    assert replaceable_layers(net, exclude=layers[:2]) == layers[2:]
    from compressflow.errors import InputError

    with pytest.raises(InputError, match=r"layers\.include: 'features\.99' is not a replaceable layer; valid: "):
        replaceable_layers(net, include=["features.99"])
    mnv2 = build_model("mobilenet_v2", width=0.25)
    assert all(mnv2.get_submodule(n).groups == 1 for n in replaceable_layers(mnv2))  # depthwise convs excluded
