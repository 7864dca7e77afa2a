"""Every registered model: shapes, gradients, CIFAR stem, and fidelity to the published nets."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn

from compressflow.errors import InputError
from compressflow.metrics.flops import macs_per_sample, param_count
from compressflow.nn.models import build_model
from compressflow.registries import MODELS, UnknownNameError

NAMES = [
    "mobilenet_v2",
    "resnet18",
    "resnet34",
    "resnet50",
    "shufflenet_v2",
    "vgg16",
    "wrn_16_1",
    "wrn_40_2",
]


def meta_model(name: str, **kwargs) -> nn.Module:
    # parameters are counted, never run: skip allocating and initialising real weights
    with torch.device("meta"):
        return build_model(name, **kwargs)


def test_registry_lists_exactly_the_models():
    assert MODELS.list(task="classification") == NAMES
    assert MODELS.list(task="detection") == ["ssd_vgg16", "ssdlite_mobilenet_v3"]


@pytest.mark.parametrize("width", [0.25, 0.5])
@pytest.mark.parametrize("name", NAMES)
def test_forward_backward(name, width):
    torch.manual_seed(0)
    for in_channels, size, num_classes in [(3, 16, 10), (1, 8, 7)]:
        model = build_model(name, num_classes=num_classes, in_channels=in_channels, width=width)
        model.train()
        out = model(torch.randn(2, in_channels, size, size))
        assert out.shape == (2, num_classes)
        assert torch.isfinite(out).all()
        out.logsumexp(1).sum().backward()
        for pname, p in model.named_parameters():
            assert p.grad is not None, f"{name}: no gradient reaches {pname}"
            assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient in {pname}"
        assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_large_input_and_eval_mode(name):
    model = build_model(name, num_classes=5, in_channels=3, width=0.25).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5)


@pytest.mark.parametrize(
    ("name", "published"),
    [
        ("resnet18", 11.17e6),
        ("wrn_40_2", 2.24e6),
        ("wrn_16_1", 0.175e6),
        ("vgg16", 14.73e6),  # VGG16-BN with the single-linear CIFAR head
    ],
)
def test_param_count_matches_published_cifar_figures(name, published):
    assert param_count(meta_model(name, num_classes=10)) == pytest.approx(published, rel=0.05)


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
def test_resnet_is_torchvisions_up_to_the_stem(name):
    ours = param_count(meta_model(name, num_classes=10))
    with torch.device("meta"):
        ref = param_count(getattr(torchvision.models, name)(num_classes=10))
    # only the first conv differs: 3×3 instead of 7×7 kernels, 64 filters over 3 channels
    assert ref - ours == 64 * 3 * (7 * 7 - 3 * 3)


@pytest.mark.parametrize(
    ("name", "reference"),
    [("mobilenet_v2", "mobilenet_v2"), ("shufflenet_v2", "shufflenet_v2_x1_0")],
)
def test_mobile_nets_keep_torchvisions_parameters(name, reference):
    # the CIFAR variants change strides only, so the parameter count is unchanged
    with torch.device("meta"):
        ref = param_count(getattr(torchvision.models, reference)(num_classes=10))
    assert param_count(meta_model(name, num_classes=10)) == ref


def test_vgg16_features_are_torchvisions_vgg16_bn():
    with torch.device("meta"):
        ref = torchvision.models.vgg16_bn().features
    ours = meta_model("vgg16", num_classes=10)
    assert param_count(ours.features) == param_count(ref)
    assert param_count(ours) == param_count(ref) + 512 * 10 + 10


def _weighted_layers(model: nn.Module) -> int:
    """Convs with kernels > 1×1 plus linears, i.e. the layers a ResNet/WRN depth counts."""
    return sum(
        isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1))
        for m in model.modules()
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resnet18", 18),
        ("resnet34", 34),
        ("resnet50", 1 + 16 + 1),  # bottlenecks have one 3×3 conv each
        ("vgg16", 13 + 1),
        ("wrn_40_2", 1 + 36 + 1),  # depth 6n+4 with n=6 blocks of 2 convs per group
        ("wrn_16_1", 1 + 12 + 1),
    ],
)
def test_depth(name, expected):
    assert _weighted_layers(meta_model(name)) == expected


def test_wrn_widths_follow_the_widening_factor():
    model = meta_model("wrn_40_2")
    assert model.fc.in_features == 64 * 2
    groups = (model.block1, model.block2, model.block3)
    assert [g[0].conv1.out_channels for g in groups] == [32, 64, 128]


@pytest.mark.parametrize("name", NAMES)
def test_cifar_stem(name):
    model = meta_model(name, in_channels=1)
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 1
    assert first.kernel_size == (3, 3) and first.stride == (1, 1)
    if name != "vgg16":  # VGG's pools are part of the architecture
        assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())


def test_resnet18_macs_at_32px_match_the_cifar_figure():
    # the CIFAR ResNet18's widely quoted 0.56 G MACs; an ImageNet stem would give ~0.04 G
    macs = macs_per_sample(meta_model("resnet18"), (3, 32, 32))
    assert macs == pytest.approx(0.556e9, rel=0.03)


def test_mobilenet_v2_keeps_three_downsamplings():
    model = meta_model("mobilenet_v2")
    strides = [m.stride[0] for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert strides.count(2) == 3


@pytest.mark.parametrize("name", NAMES)
def test_width_shrinks_models(name):
    counts = [param_count(meta_model(name, width=w)) for w in (0.25, 0.5, 1.0)]
    assert counts[0] < counts[1] < counts[2]


def test_shufflenet_channels_stay_even_at_odd_widths():
    model = build_model("shufflenet_v2", width=0.3)
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"width": 0}, "width"),
        ({"width": -0.5}, "width"),
        ({"width": math.nan}, "width"),
        ({"width": "1"}, "width"),
        ({"num_classes": 1}, "num_classes"),
        ({"in_channels": 0}, "in_channels"),
    ],
)
@pytest.mark.parametrize("name", NAMES)
def test_bad_arguments_raise_input_error(name, kwargs, field):
    with pytest.raises(InputError, match=field) as info:
        build_model(name, **kwargs)
    message = str(info.value)
    assert repr(next(iter(kwargs.values()))) in message
    assert "\n" not in message


def test_build_model_errors_name_the_choices():
    with pytest.raises(UnknownNameError, match="resnet18"):
        build_model("resnet19")
    with pytest.raises(InputError, match="depth"):
        build_model("resnet18", depth=18)
    assert build_model("wrn_16_1", num_classes=100).fc.out_features == 100
