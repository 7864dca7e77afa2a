"""Attention transfer (ALGORITHMS §4): the loss against a value worked out by hand, the maps
taken at the residual groups' outputs, and the spec-time check of a model without stages."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from compressflow.errors import InputError
from compressflow.nn.attention import TeacherLoss, attention_map, attention_transfer
from compressflow.nn.models import build_model

# two groups, batch 2; group 1 is B×C×H×W = 2×2×2×2, group 2 is 2×3×1×2
S1 = [[[[1, 2], [0, 1]], [[1, 0], [2, 1]]], [[[0, 0], [1, 3]], [[2, 1], [0, 1]]]]

T1 = [[[[2, 0], [1, 1]], [[0, 2], [1, 1]]], [[[1, 1], [1, 1]], [[1, 1], [1, 1]]]]

S2 = [[[[1, 0]], [[1, 1]], [[0, 2]]], [[[3, 1]], [[0, 1]], [[1, 1]]]]

T2 = [[[[0, 1]], [[2, 0]], [[1, 1]]], [[[1, 1]], [[1, 2]], [[2, 0]]]]


def _by_hand(s: list, t: list) -> float:
    """mean over batch and positions of (q_s − q_t)², q = mean over channels of f², then ℓ2
    normalised per sample — in plain numpy."""
    def q(f):
        a = (np.asarray(f, dtype=float) ** 2).mean(axis=1).reshape(len(f), -1)
        return a / np.sqrt((a ** 2).sum(axis=1, keepdims=True))

    return float(((q(s) - q(t)) ** 2).mean())


def test_attention_transfer_matches_the_hand_computation():
    # group 1, sample 0: mean_c(s²) = [(1+1)/2, (4+0)/2, (0+4)/2, (1+1)/2] = [1, 2, 2, 1], norm √10;
    # teacher: [(4+0)/2, (0+4)/2, (1+1)/2, (1+1)/2] = [2, 2, 1, 1], norm √10
    q_s0, q_t0 = np.array([1, 2, 2, 1]) / np.sqrt(10), np.array([2, 2, 1, 1]) / np.sqrt(10)
    np.testing.assert_allclose(attention_map(torch.tensor(S1, dtype=torch.float64))[0], q_s0)
    np.testing.assert_allclose(attention_map(torch.tensor(T1, dtype=torch.float64))[0], q_t0)
    # sample 0 contributes Σ(q_s − q_t)² = (1 + 0 + 1 + 0) / 10 = 0.2 over its 4 positions
    assert ((q_s0 - q_t0) ** 2).sum() == pytest.approx(0.2)
    expected = 1000 * (_by_hand(S1, T1) + _by_hand(S2, T2))
    got = attention_transfer([torch.tensor(S1, dtype=torch.float64), torch.tensor(S2, dtype=torch.float64)],
                             [torch.tensor(T1, dtype=torch.float64), torch.tensor(T2, dtype=torch.float64)], beta=1000)
    assert float(got) == pytest.approx(expected, rel=1e-12)
    # a written-out number for group 1: sample 0 gives 0.2/4; sample 1: q_s ∝ [2, .5, .5, 5], q_t ∝ [1, 1, 1, 1]
    qs1 = np.array([2, 0.5, 0.5, 5]) / np.sqrt(4 + 0.25 + 0.25 + 25)
    g1 = (0.2 + ((qs1 - 0.5) ** 2).sum()) / 8
    assert _by_hand(S1, T1) == pytest.approx(g1)
    # identical maps cost nothing; scaling a map changes nothing (the maps are normalised)
    s = torch.tensor(S1, dtype=torch.float64)
    assert float(attention_transfer([s], [3 * s])) == pytest.approx(0.0, abs=1e-12)


def test_attention_transfer_refuses_mismatched_maps():
    a, b = torch.ones(2, 3, 4, 4), torch.ones(2, 5, 2, 2)
    with pytest.raises(InputError, match=r"stage 1 maps differ in size"):
        attention_transfer([a], [b])
    with pytest.raises(InputError, match=r"1 student stages vs 2 teacher stages"):
        attention_transfer([a], [a, a])
    attention_transfer([a], [torch.ones(2, 7, 4, 4)])  # other channel counts are fine


def test_teacher_loss_uses_the_group_outputs_and_adds_to_ce_or_kd():
    torch.manual_seed(0)
    teacher = build_model("resnet18", num_classes=10, in_channels=1, width=0.125).eval()
    student = build_model("resnet18", num_classes=10, in_channels=1, width=0.125).eval()
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    # the maps by hand: the outputs of layer1..layer4, read off a plain forward
    def groups(net):
        out = []
        h = net.conv1(x)
        h = net.relu(net.bn1(h))
        for name in ("layer1", "layer2", "layer3", "layer4"):
            h = getattr(net, name)(h)
            out.append(h)
        return out

    with torch.no_grad():
        at = attention_transfer(groups(student), groups(teacher), 1000.0)
        t_logits = teacher(x)
        for kd, base in ((None, None), ((4.0, 0.9), "hkd")):
            loss = TeacherLoss(teacher, kd=kd, at_beta=1000.0)
            handles = loss.attach(student)
            logits = student(x)
            got = loss(logits, x, y)
            for h in handles:
                h.remove()
            if base is None:
                ref = F.cross_entropy(logits, y)
            else:
                from compressflow.nn.losses import hkd

                ref = hkd(logits, t_logits, y, 4.0, alpha=0.9)
            assert float(got) == pytest.approx(float(ref + at), rel=1e-5)
        assert float(at) > 0


def test_stage_outputs_per_family_and_a_model_without_stages():
    from compressflow.nn.architectures import stage_outputs

    assert stage_outputs(build_model("resnet34", width=0.125)) == ["layer1", "layer2", "layer3", "layer4"]
    assert stage_outputs(build_model("wrn_40_2", width=0.125)) == ["block1", "block2", "block3"]
    assert stage_outputs(build_model("shufflenet_v2", width=0.25)) == ["stage2", "stage3", "stage4"]
    # MobileNetV2 (CIFAR strides 1,1,2,2,1,2,1 over 1,2,3,4,3,3,1 blocks): the last block at each resolution
    assert stage_outputs(build_model("mobilenet_v2", width=0.25)) == ["features.3", "features.6", "features.13",
                                                                      "features.17"]
    vgg = build_model("vgg16", width=0.125)
    names = stage_outputs(vgg)
    assert len(names) == 5 and all(isinstance(vgg.get_submodule(n), torch.nn.ReLU) for n in names)
    # each stage output is at a new resolution: feed 32×32 and read the map sizes
    for model in ("resnet18", "mobilenet_v2", "vgg16", "wrn_16_1", "shufflenet_v2"):
        net = build_model(model, width=0.25).eval()
        sizes = []
        hooks = [net.get_submodule(n).register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
                 for n in stage_outputs(net)]
        with torch.no_grad():
            net(torch.randn(1, 3, 32, 32))
        for h in hooks:
            h.remove()
        assert sizes == sorted(set(sizes), reverse=True), (model, sizes)
    with pytest.raises(InputError, match=r"^Sequential has no residual groups or stages .*supported families"):
        stage_outputs(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2)))
