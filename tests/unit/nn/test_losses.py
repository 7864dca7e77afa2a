"""KD losses against values computed by hand (NumPy) for a small batch."""

import numpy as np
import pytest
import torch

from compressflow.nn import losses  # noqa: F401  (registers)
from compressflow.registries import LOSSES

S = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])

T = np.array([[3.0, -1.0, 0.0], [1.0, 0.0, -2.0]])

Y = np.array([0, 2])


def softmax(a):
    e = np.exp(a - a.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def kl(t, s, tau):
    pt, ps = softmax(t / tau), softmax(s / tau)
    return float(np.mean(np.sum(pt * (np.log(pt) - np.log(ps)), axis=1)))


def ce(s, y):
    return float(np.mean(-np.log(softmax(s)[np.arange(len(y)), y])))


def call(name, tau, **kw):
    fn = LOSSES.get(name)
    return float(fn(torch.tensor(S), torch.tensor(T), torch.tensor(Y), tau, **kw))


@pytest.mark.parametrize("tau", [1.0, 4.0, 20.0])
def test_hkd_by_hand(tau):
    expected = 0.95 * tau**2 * kl(T, S, tau) + 0.05 * ce(S, Y)
    assert call("hkd", tau) == pytest.approx(expected, rel=1e-9)
    assert call("hkd", tau, alpha=0.5) == pytest.approx(0.5 * tau**2 * kl(T, S, tau) + 0.5 * ce(S, Y), rel=1e-9)


@pytest.mark.parametrize("tau", [1.0, 3.0])
def test_cmc_by_hand(tau):
    mse = float(np.mean((S / tau - T / tau) ** 2))
    assert call("cmc", tau) == pytest.approx(0.95 * mse + 0.05 * ce(S, Y), rel=1e-12)
    assert call("cmc", tau, alpha=1.0) == pytest.approx(mse, rel=1e-12)  # before distill v2
    # with τ² the KD term is the plain logit MSE: τ no longer matters
    plain = 0.95 * float(np.mean((S - T) ** 2)) + 0.05 * ce(S, Y)
    assert call("cmc", tau, tau_squared=True) == pytest.approx(plain, rel=1e-12)


def test_dml_by_hand_and_tau_tensor():
    assert call("dml", 2.0) == pytest.approx(0.95 * kl(T, S, 2.0) + 0.05 * ce(S, Y), rel=1e-9)
    assert call("dml", 2.0, alpha=1.0) == pytest.approx(kl(T, S, 2.0), rel=1e-9)
    # a per-batch τ arrives as a 0-d tensor; τ² must use that batch's τ
    assert call("hkd", torch.tensor(5.0)) == pytest.approx(0.95 * 25 * kl(T, S, 5.0) + 0.05 * ce(S, Y), rel=1e-9)
    assert call("dml", torch.tensor(5.0), tau_squared=True) == pytest.approx(0.95 * 25 * kl(T, S, 5.0) + 0.05 * ce(S, Y),
                                                                          rel=1e-9)


@pytest.mark.parametrize("tau", [2.0, 7.0, 20.0])
def test_dml_with_tau_squared_is_hkd_and_hkd_without_is_dml(tau):
    assert call("dml", tau, tau_squared=True) == call("hkd", tau)
    assert call("hkd", tau, tau_squared=False) == call("dml", tau)
    # without τ² the KD term's weight falls as 1/τ² against the label term's
    assert call("dml", tau) < call("hkd", tau)


def test_ce_and_registry():
    assert call("ce", 7.0) == pytest.approx(ce(S, Y), rel=1e-12)
    assert call("ce", 7.0, tau_squared=True, alpha=0.2) == pytest.approx(ce(S, Y), rel=1e-12)
    assert {"hkd", "cmc", "dml", "ce"} <= set(LOSSES.list())


def test_identical_logits_zero_kd():
    same = torch.tensor(T)
    for name in ("dml", "cmc", "hkd"):  # only the label term is left
        assert float(LOSSES.get(name)(same, same, torch.tensor(Y), 4.0)) == pytest.approx(0.05 * ce(T, Y), rel=1e-9)
