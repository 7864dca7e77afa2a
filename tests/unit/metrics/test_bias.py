"""CEV, SDE and PIEs against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from compressflow.metrics.bias import cev_sde, fpr_fnr, pie_mask

# rows: true class, columns: predicted; 10 samples per class
ORIGINAL = np.array([[8, 1, 1],
                     [2, 8, 0],
                     [1, 1, 8]])

COMPRESSED = np.array([[6, 2, 2],
                       [2, 8, 0],
                       [0, 1, 9]])


def test_rates_by_hand():
    fpr, fnr = fpr_fnr(ORIGINAL)
    # class 0: FN = 2 of 10; FP = 2 + 1 = 3 of the 20 others
    np.testing.assert_allclose(fnr, [0.2, 0.2, 0.2])
    np.testing.assert_allclose(fpr, [3 / 20, 2 / 20, 1 / 20])
    fpr, fnr = fpr_fnr(COMPRESSED)
    np.testing.assert_allclose(fnr, [0.4, 0.2, 0.1])
    np.testing.assert_allclose(fpr, [2 / 20, 3 / 20, 2 / 20])


def test_cev_and_sde_by_hand():
    # δFPR: class 0: (0.10 − 0.15)/0.15 = −33.33 %; class 1: (0.15 − 0.10)/0.10 = +50 %;
    # class 2: (0.10 − 0.05)/0.05 = +100 %.  δFNR: (0.4 − 0.2)/0.2 = +100 %; 0 %; (0.1 − 0.2)/0.2 = −50 %.
    d = np.array([[-100 / 3, 100.0], [50.0, 0.0], [100.0, -50.0]])
    mu = d.mean(axis=0)  # (38.889, 16.667)
    cev = np.mean([np.sum((mu - row) ** 2) for row in d])
    sde = np.mean([abs(row[1] - row[0]) / math.sqrt(2) for row in d])
    # spelled out: SDE = (133.33 + 50 + 150) / 3 / √2 = 78.567
    assert sde == pytest.approx((400 / 3 + 50 + 150) / 3 / math.sqrt(2))
    res = cev_sde(COMPRESSED, ORIGINAL)
    assert res["cev"] == pytest.approx(cev) and res["sde"] == pytest.approx(sde)
    assert res["cev"] == pytest.approx(6913.580, rel=1e-6)  # (12160.49 + 401.23 + 8179.01) / 3
    np.testing.assert_allclose(res["d_fpr"], d[:, 0])
    np.testing.assert_allclose(res["d_fnr"], d[:, 1])
    assert res["n_classes"] == 3


def test_identical_models_have_no_bias_and_zero_rates_are_floored():
    res = cev_sde(ORIGINAL, ORIGINAL)
    assert res["cev"] == 0 and res["sde"] == 0
    perfect = np.diag([10, 10, 10])
    one_error = np.array([[9, 1, 0], [0, 10, 0], [0, 0, 10]])
    floored = cev_sde(one_error, perfect, floor=0.5)
    # class 0 FNR: original 0 floored to 0.5/10 = 0.05, compressed 0.1 → +100 %
    assert floored["d_fnr"][0] == pytest.approx(100.0)
    assert floored["n_classes"] == 3
    undefined = cev_sde(one_error, perfect, floor=0.0)
    assert undefined["n_classes"] == 0 and math.isnan(undefined["cev"])


def test_pies_are_modal_label_disagreements():
    original = np.array([0, 1, 2, 1])
    population = np.array([[0, 1, 2, 2],
                           [0, 2, 2, 2],
                           [1, 2, 2, 1]])
    # sample 0: mode 0 (=) ; sample 1: mode 2 (≠ 1); sample 2: mode 2 (=); sample 3: mode 2 (≠ 1)
    assert pie_mask(population, original).tolist() == [False, True, False, True]
