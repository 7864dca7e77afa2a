"""Classification metrics against a hand computation; a class absent from the data scores 0, not NaN."""

import numpy as np
import pytest

from compressflow.metrics.classification import classification_metrics


def test_metrics_match_hand_computation():
    # 3 classes, 8 samples
    y_true = [0, 0, 0, 1, 1, 2, 2, 2]
    y_pred = [0, 0, 1, 1, 2, 2, 2, 0]
    m = classification_metrics(y_true, y_pred, num_classes=3)
    cm = m.confusion.values
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [1, 0, 2]]
    assert float(m.accuracy) == pytest.approx(5 / 8)
    # class 0: tp2 fp1 fn1 tn4 ; class 1: tp1 fp1 fn1 tn5 ; class 2: tp2 fp1 fn1 tn4
    prec = [2 / 3, 1 / 2, 2 / 3]
    rec = [2 / 3, 1 / 2, 2 / 3]
    spec = [4 / 5, 5 / 6, 4 / 5]
    assert float(m.precision) == pytest.approx(np.mean(prec))
    assert float(m.recall) == pytest.approx(np.mean(rec))
    assert float(m.specificity) == pytest.approx(np.mean(spec))
    assert float(m.f1) == pytest.approx(np.mean([2 * p * r / (p + r) for p, r in zip(prec, rec)]))
    assert m.class_prevalence.values.tolist() == pytest.approx([3 / 8, 2 / 8, 3 / 8])
    # kappa: po = 5/8, pe = sum(row_i * col_i) / n^2 = (3*3 + 2*2 + 3*3) / 64
    pe = (3 * 3 + 2 * 2 + 3 * 3) / 64
    assert float(m.kappa) == pytest.approx((5 / 8 - pe) / (1 - pe))


def test_absent_class_gets_zero_not_nan():
    m = classification_metrics([0, 0, 1], [0, 0, 1], num_classes=3)
    assert float(m.accuracy) == 1.0
    assert m.class_precision.values.tolist() == [1.0, 1.0, 0.0]
    assert np.isfinite(float(m.f1))
