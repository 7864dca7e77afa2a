"""FLOP counting against hand-computed values and torchvision's published MAC figures."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from compressflow.errors import InputError
from compressflow.metrics.flops import count_flops, macs_per_sample, param_count, train_step_flops_per_sample


@pytest.mark.parametrize(
    ("name", "gmacs"),
    [
        ("resnet18", 1.81),
        ("resnet50", 4.09),
        ("mobilenet_v2", 0.30),
        ("vgg16", 15.47),
        ("shufflenet_v2_x1_0", 0.14),
    ],
)
def test_torchvision_published_macs(name, gmacs):
    # meta tensors: the counter sees every op's shapes without computing anything
    with torch.device("meta"):
        model = getattr(torchvision.models, name)(weights=None)
    # abs: the docs round to two decimals (ShuffleNetV2's 0.145 G is listed as 0.14)
    assert macs_per_sample(model, (3, 224, 224)) / 1e9 == pytest.approx(gmacs, rel=0.03, abs=0.005)


def test_real_and_meta_tensors_count_the_same():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    with torch.device("meta"):
        meta = torchvision.models.resnet18(weights=None, num_classes=10)
    assert macs_per_sample(model, (3, 64, 64)) == macs_per_sample(meta, (3, 64, 64))


@pytest.mark.parametrize(
    ("layer", "shape", "macs"),
    [
        (nn.Conv2d(3, 8, 3, padding=1), (3, 10, 12), 8 * 10 * 12 * 3 * 3 * 3),
        # stride 2 → 4×4 outputs; 4 groups → each filter sees 2 of the 8 channels
        (nn.Conv2d(8, 16, 3, stride=2, groups=4), (8, 9, 9), 16 * 4 * 4 * 2 * 3 * 3),
        (nn.Linear(20, 5), (20,), 20 * 5),
    ],
)
def test_single_layer_macs_are_exact(layer, shape, macs):
    assert macs_per_sample(layer, shape) == macs


def test_count_flops_includes_backward():
    layer = nn.Linear(3, 4)
    x = torch.randn(5, 3, requires_grad=True)
    assert count_flops(layer, x) == 2 * 5 * 3 * 4

    def step():
        layer(x).sum().backward()

    # backward: one matmul for the input gradient, one for the weight gradient
    assert count_flops(step) == 3 * 2 * 5 * 3 * 4


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1, stride=2),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


def test_train_step_is_about_three_forwards():
    model = small_cnn()
    forward_flops = 2 * macs_per_sample(model, (3, 16, 16))
    train = train_step_flops_per_sample(model, (3, 16, 16), num_classes=10, batch_size=4)
    # the first conv needs no input gradient, so slightly under 3×
    assert 2.5 * forward_flops <= train <= 3.5 * forward_flops
    assert train < 3 * forward_flops


def test_mode_grads_and_buffers_are_left_alone():
    model = small_cnn().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    macs_per_sample(model, (3, 16, 16))
    assert model.training
    model.eval()
    train_step_flops_per_sample(model, (3, 16, 16), num_classes=10)
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics included

    model.train()
    train_step_flops_per_sample(model, (3, 16, 16), num_classes=10)
    assert model.training


def test_existing_gradients_survive():
    model = small_cnn()
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    train_step_flops_per_sample(model, (3, 8, 8), num_classes=10)
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))


def test_param_count():
    model = small_cnn()
    model[0].weight.requires_grad_(False)  # frozen parameters still count
    expected = (3 * 8 * 9 + 8) + 2 * 8 + (8 * 16 * 9 + 16) + 2 * 16 + (16 * 10 + 10)
    assert param_count(model) == expected


def test_bad_inputs():
    with pytest.raises(InputError, match="sample_shape"):
        macs_per_sample(nn.Linear(2, 2), (0, 2))
    with pytest.raises(InputError, match="batch_size"):
        train_step_flops_per_sample(small_cnn(), (3, 8, 8), num_classes=10, batch_size=1)
    with pytest.raises(InputError, match="trainable"):
        train_step_flops_per_sample(small_cnn().requires_grad_(False), (3, 8, 8), num_classes=10)
