"""DeepInversion's loss terms against hand computations, and the optimisation moving a
network's BatchNorm statistics toward its running statistics."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from compressflow.nn.deepinversion import (BNStatistics, InversionWeights, bn_distance, bn_statistics_loss,
                                           competition_loss, deep_inversion, image_l2, total_variation)


def test_total_variation_of_a_known_2x2_image():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 5.0]]]])
    l1, l2 = total_variation(x)
    # right: (1-2, 3-5) = (-1, -2); down: (1-3, 2-5) = (-2, -3); diagonals: 3-2 = 1 and 1-5 = -4
    assert float(l1) == pytest.approx(1.5 + 2.5 + 1 + 4)
    assert float(l2) == pytest.approx(math.sqrt(5) + math.sqrt(13) + 1 + 4)


def test_bn_statistics_loss_of_a_known_batch():
    # channel 0 holds 1 and 3 (mean 2, biased variance 1), channel 1 holds 0 and 4 (mean 2, variance 4)
    x = torch.tensor([[[[1.0]], [[0.0]]], [[[3.0]], [[4.0]]]])
    loss = bn_statistics_loss(x, torch.zeros(2), torch.ones(2))
    assert float(loss) == pytest.approx(math.hypot(2, 2) + math.hypot(0, 3))


def test_image_l2_and_competition_by_hand():
    assert float(image_l2(torch.tensor([[[[3.0, 4.0]]], [[[0.0, 0.0]]]]))) == pytest.approx(2.5)
    same = torch.tensor([[2.0, 0.0, -1.0]])
    assert float(competition_loss(same, same)) == pytest.approx(1.0)  # JS 0: full agreement
    t, s = torch.tensor([[6.0, 0.0]]), torch.tensor([[0.0, 6.0]])
    p = np.clip(np.exp([0, 2]) / np.exp([0, 2]).sum(), 0.01, 0.99)  # student, τ = 3
    q = np.clip(np.exp([2, 0]) / np.exp([2, 0]).sum(), 0.01, 0.99)
    m = np.clip((np.exp([0, 2]) / np.exp([0, 2]).sum() + np.exp([2, 0]) / np.exp([2, 0]).sum()) / 2, 0.01, 0.99)
    js = 0.5 * (m * (np.log(m) - np.log(p))).sum() + 0.5 * (m * (np.log(m) - np.log(q))).sum()
    assert float(competition_loss(t, s)) == pytest.approx(1 - js, rel=1e-5)


def _net(seed=0):
    """Conv-BN-ReLU twice, then a classifier; random weights, the BN running statistics those of
    "real" images (constant 1.5 plus noise of std 0.5), far from standard normal noise's."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    real = 1.5 + 0.5 * torch.randn(64, 1, 6, 6, generator=torch.Generator().manual_seed(seed + 100))
    for bn in (net[1], net[4]):
        bn.momentum = None  # the running statistics become the exact averages over this one batch
    with torch.no_grad():
        net.train()(real)
    return net.eval()


def test_hooks_sum_every_bn_layer_and_are_removed():
    net = _net()
    x = torch.randn(8, 1, 6, 6)
    with torch.no_grad():
        first_in = net[0](x)
        second_in = net[3](net[2](net[1](first_in)))
        want = [bn_statistics_loss(first_in, net[1].running_mean, net[1].running_var),
                bn_statistics_loss(second_in, net[4].running_mean, net[4].running_var)]
    with torch.no_grad(), BNStatistics(net) as stats:
        net(x)
        assert [float(t) for t in stats.terms] == pytest.approx([float(w) for w in want])
        assert float(stats.loss(first_bn=10)) == pytest.approx(10 * float(want[0]) + float(want[1]))
    assert not net[1]._forward_hooks and not net[4]._forward_hooks
    assert bn_distance(net, x, batch_size=8) == pytest.approx(float(want[0] + want[1]))


def test_inversion_moves_bn_statistics_toward_the_running_ones():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    labels = torch.arange(24) % 3
    res = deep_inversion(net, labels, (1, 6, 6), iterations=40, batch_size=12, lr=0.1,
                         weights=InversionWeights(r_feature=1.0), seed=3)
    assert res.images.shape == (24, 1, 6, 6) and res.images.dtype == torch.float32
    assert torch.equal(res.labels, labels) and res.labels.dtype == torch.int64
    assert res.bn_distance_final < 0.1 * res.bn_distance_initial  # about 4.0 -> 0.03
    # the recorded distances are those of the images returned (the noise: as drawn from the seed)
    assert res.bn_distance_final == pytest.approx(bn_distance(net, res.images, batch_size=12), rel=1e-4)
    noise = torch.randn((24, 1, 6, 6), generator=torch.Generator().manual_seed(3))
    assert res.bn_distance_initial == pytest.approx(bn_distance(net, noise, batch_size=12), rel=1e-4)
    for name, value in net.state_dict().items():  # the teacher is never updated
        assert torch.equal(value, before[name]), name
    assert all(p.requires_grad for p in net.parameters()) and not net.training
    pred = net(res.images).argmax(1)
    assert res.teacher_accuracy == pytest.approx(float((pred == labels).float().mean()))
    again = deep_inversion(net, labels, (1, 6, 6), iterations=40, batch_size=12, lr=0.1,
                           weights=InversionWeights(r_feature=1.0), seed=3)
    assert torch.equal(again.images, res.images)  # seeded: noise, jitter and flips


def test_bounds_clip_and_progress_callback():
    net = _net()
    seen = []
    lo, hi = torch.tensor([-0.5]), torch.tensor([0.25])
    res = deep_inversion(net, torch.zeros(5, dtype=torch.int64), (1, 6, 6), iterations=7, batch_size=3,
                         bounds=(lo, hi), report_every=3, on_step=lambda b, s, losses: seen.append((b, s)))
    assert float(res.images.min()) >= -0.5 and float(res.images.max()) <= 0.25
    assert seen == [(0, 3), (0, 6), (0, 7), (1, 3), (1, 6), (1, 7)]
    assert set(res.losses) == {"loss", "ce", "r_feature", "tv_l1", "tv_l2", "l2", "competition"}


def test_competition_needs_a_student_and_a_net_needs_bn():
    with pytest.raises(ValueError, match="student"):
        deep_inversion(_net(), torch.zeros(2, dtype=torch.int64), (1, 6, 6), iterations=1,
                       weights=InversionWeights(competition=0.1))
    with pytest.raises(ValueError, match="BatchNorm2d"):
        deep_inversion(nn.Sequential(nn.Flatten(), nn.Linear(36, 2)), torch.zeros(2, dtype=torch.int64), (1, 6, 6),
                       iterations=1)
    res = deep_inversion(_net(), torch.zeros(4, dtype=torch.int64), (1, 6, 6), iterations=3, student=_net(1),
                         weights=InversionWeights(competition=0.5))
    assert 0 <= res.losses["competition"] <= 1
