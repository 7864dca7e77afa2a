"""Pruning masks: exact per-layer sparsity, smallest weights first, the classifier left
dense, masks kept in force while training, and the AGP schedule."""

from __future__ import annotations

import pytest
import torch

from compressflow.errors import InputError
from compressflow.nn.models import build_model
from compressflow.nn.pruning import (agp_sparsity, apply_masks, filter_masks, layer_sparsity, magnitude_masks,
                                     make_permanent, prunable_layers, random_masks)


@pytest.fixture
def net():
    torch.manual_seed(0)
    return build_model("resnet18", num_classes=10, in_channels=1, width=0.25)


def test_prunable_layers_leave_the_classifier_out(net):
    names = prunable_layers(net)
    assert "fc" not in names and "conv1" in names and "layer1.0.conv1" in names
    assert len(names) == 20  # 17 3x3 convs + 3 1x1 shortcut convs


@pytest.mark.parametrize("sparsity", [0.3, 0.45, 0.9])
def test_magnitude_masks_hit_the_target_per_layer_and_drop_the_smallest(net, sparsity):
    fc = net.fc.weight.detach().clone()
    masks = magnitude_masks(net, sparsity)
    apply_masks(net, masks)
    for name, frac in layer_sparsity(net).items():
        w = net.get_submodule(name).weight
        assert abs(frac * w.numel() - sparsity * w.numel()) <= 1  # within one weight
        orig = net.get_submodule(name).weight_orig.detach().abs()
        assert orig[masks[name] == 0].max() <= orig[masks[name] == 1].min()
    torch.testing.assert_close(net.fc.weight, fc)  # the dense classifier is untouched
    assert not hasattr(net.fc, "weight_mask")


def test_masks_stay_in_force_while_training_and_after_baking(net):
    apply_masks(net, magnitude_masks(net, 0.6))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(3):
        loss = net(torch.randn(8, 1, 8, 8)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    net(torch.randn(2, 1, 8, 8))  # the pruning hook recomputes weight = weight_orig * mask
    before = layer_sparsity(net)
    make_permanent(net)
    assert layer_sparsity(net) == before and all(abs(v - 0.6) < 0.01 for v in before.values())
    assert not any(hasattr(m, "weight_orig") for m in net.modules())
    assert "layer1.0.conv1.weight" in net.state_dict()


def test_random_masks_are_seeded(net):
    a = random_masks(net, 0.5, torch.Generator().manual_seed(1))
    b = random_masks(net, 0.5, torch.Generator().manual_seed(1))
    c = random_masks(net, 0.5, torch.Generator().manual_seed(2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert all(abs((1 - m.mean().item()) - 0.5) * m.numel() <= 1 for m in a.values())


def test_filter_masks_zero_whole_filters_of_smallest_l1(net):
    masks = filter_masks(net, 0.5)
    w = net.get_submodule("layer2.0.conv1").weight.detach()
    m = masks["layer2.0.conv1"]
    per_filter = m.flatten(1)
    assert ((per_filter == 0).all(1) | (per_filter == 1).all(1)).all()  # all or nothing per filter
    dropped = (per_filter == 0).all(1)
    assert int(dropped.sum()) == round(0.5 * w.shape[0])
    norms = w.abs().sum((1, 2, 3))
    assert norms[dropped].max() <= norms[~dropped].min()
    assert "fc" not in masks


def test_iterated_magnitude_masks_compound_to_the_target(net):
    for r in (1, 2, 3):
        apply_masks(net, magnitude_masks(net, 1 - (1 - 0.9) ** (r / 3)))
    for name, frac in layer_sparsity(net).items():
        assert abs(frac - 0.9) * net.get_submodule(name).weight.numel() <= 1


def test_agp_schedule_and_bad_sparsity():
    s = agp_sparsity(0.75, 4)
    assert s[0] == pytest.approx(0.1) and s[-1] == pytest.approx(0.75)
    assert all(a < b for a, b in zip(s, s[1:]))
    assert s[1] == pytest.approx(0.75 + (0.1 - 0.75) * (2 / 3) ** 3)
    assert agp_sparsity(0.05, 3)[0] == pytest.approx(0.05) and agp_sparsity(0.5, 1) == [0.5]
    for bad in (0.0, 1.0, -0.2, 1.5):
        with pytest.raises(InputError, match=r"^sparsity: must be in \(0, 1\)"):
            magnitude_masks(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Linear(2, 2)), bad)
