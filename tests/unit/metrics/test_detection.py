"""COCO mAP against hand-computed values: perfect boxes, boxes of a known IoU, misses,
false positives, classes without ground truth and VOC ``difficult`` objects."""

import numpy as np
import pytest
import torch

from compressflow.metrics.detection import IOU_THRESHOLDS, detection_metrics


def _gt(boxes, labels, difficult=None):
    t = {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)}
    if difficult is not None:
        t["difficult"] = torch.tensor(difficult)
    return t


def _pred(boxes, labels, scores):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels),
            "scores": torch.tensor(scores)}

BOX = [10.0, 10.0, 20.0, 20.0]  # 10 × 10 = 100 px²


def test_perfect_predictions_score_one_at_every_threshold():
    targets = [_gt([BOX, [30, 30, 50, 40]], [1, 2]), _gt([[0, 0, 8, 16]], [2])]
    preds = [_pred([BOX, [30, 30, 50, 40]], [1, 2], [0.9, 0.8]), _pred([[0, 0, 8, 16]], [2], [0.7])]
    m = detection_metrics(preds, targets, num_classes=2, class_names=("circle", "square"))
    assert float(m.map_50) == 1.0 and float(m.map_50_95) == 1.0 and float(m.map_75) == 1.0
    # COCO's precision is tp / (tp + fp + ε): 1 − 2e-16 per class (the float32 summary rounds it to 1.0)
    assert m.map_50_per_class.values == pytest.approx([1.0, 1.0]) and m.map_per_class.values == pytest.approx([1, 1])
    assert m.class_name.values.tolist() == ["circle", "square"] and m["class"].values.tolist() == [1, 2]
    assert m.num_objects.values.tolist() == [1, 2]
    assert m.map_50.attrs["units"] == "1"


# a 10 × 10 box shifted right by s px: intersection 10·(10 − s), union 10·(10 + s)
@pytest.mark.parametrize("shift, iou, map_50_95", [
    (1, 90 / 110, 0.7),   # IoU 0.818 ≥ 0.50 … 0.80: 7 of the 10 thresholds
    (2, 80 / 120, 0.4),   # IoU 0.667 ≥ 0.50, 0.55, 0.60, 0.65: 4 of 10
    (3, 70 / 130, 0.1),   # IoU 0.538 ≥ 0.50 only: 1 of 10
    (4, 60 / 140, 0.0),   # IoU 0.429 < 0.50: a miss and a false positive everywhere
])
def test_shifted_box_is_matched_exactly_at_the_thresholds_below_its_iou(shift, iou, map_50_95):
    assert sum(t <= iou for t in IOU_THRESHOLDS) / 10 == pytest.approx(map_50_95)
    moved = [BOX[0] + shift, BOX[1], BOX[2] + shift, BOX[3]]
    m = detection_metrics([_pred([moved], [1], [0.9])], [_gt([BOX], [1])], num_classes=1)
    # one ground truth, one detection: AP is 1 (precision 1 at all 101 recall points) where matched, else 0
    assert float(m.map_50) == (1.0 if iou >= 0.5 else 0.0)
    assert float(m.map_50_95) == pytest.approx(map_50_95)
    assert float(m.map_75) == (1.0 if iou >= 0.75 else 0.0)
    assert float(m.map_per_class[0]) == pytest.approx(map_50_95)


def test_a_class_never_detected_has_ap_zero_and_halves_the_mean():
    targets = [_gt([BOX, [30, 30, 40, 40]], [1, 2])]
    preds = [_pred([BOX], [1], [0.9])]
    m = detection_metrics(preds, targets, num_classes=2)
    assert m.map_50_per_class.values == pytest.approx([1.0, 0.0])
    assert m.map_per_class.values == pytest.approx([1.0, 0.0])
    assert float(m.map_50) == 0.5 and float(m.map_50_95) == 0.5


def test_false_positive_ranked_first_halves_precision_ranked_last_costs_nothing():
    targets = [_gt([BOX], [1])]
    elsewhere = [50.0, 50.0, 60.0, 60.0]
    # ranked first: precision 1/2 at recall 1, so the interpolated precision is 0.5 at all 101 recall points
    first = detection_metrics([_pred([elsewhere, BOX], [1, 1], [0.9, 0.8])], targets, num_classes=1)
    assert float(first.map_50) == pytest.approx(0.5) and float(first.map_50_95) == pytest.approx(0.5)
    # ranked last: precision 1 is reached at recall 1 before the false positive, and interpolation keeps the max
    last = detection_metrics([_pred([elsewhere, BOX], [1, 1], [0.1, 0.8])], targets, num_classes=1)
    assert float(last.map_50) == 1.0
    # a duplicate detection of the same object is a false positive too (each ground truth matches once)
    dup = detection_metrics([_pred([BOX, BOX], [1, 1], [0.9, 0.8])], targets, num_classes=1)
    assert float(dup.map_50) == 1.0  # the duplicate ranks below the true positive
    # two images, two objects, recall 1/2 at precision 1 then a false positive, then recall 1 at precision 2/3:
    # interpolated precision 1 at recall 0 … 0.5 (51 points), 2/3 at 0.51 … 1 (50 points)
    two = detection_metrics([_pred([BOX, elsewhere], [1, 1], [0.9, 0.8]), _pred([BOX], [1], [0.7])],
                            [_gt([BOX], [1]), _gt([BOX], [1])], num_classes=1)
    assert float(two.map_50) == pytest.approx((51 * 1 + 50 * 2 / 3) / 101)


def test_class_without_ground_truth_is_nan_and_left_out_of_the_mean():
    targets = [_gt([BOX], [1])]
    preds = [_pred([BOX, [40, 40, 50, 50]], [1, 3], [0.9, 0.95])]  # class 3 exists only as a false positive
    m = detection_metrics(preds, targets, num_classes=3)
    assert float(m.map_50) == 1.0 and float(m.map_50_95) == 1.0
    assert m.map_50_per_class.values[0] == pytest.approx(1.0) and np.isnan(m.map_50_per_class.values[1:]).all()
    assert np.isnan(m.map_per_class.values[2]) and m.num_objects.values.tolist() == [1, 0, 0]


def test_difficult_objects_are_neither_missed_nor_false_positives():
    targets = [_gt([BOX, [40, 40, 50, 50], [60, 60, 70, 70]], [1, 1, 1], difficult=[False, True, True])]
    # the easy box found; one difficult box found (ignored, not a false positive), one difficult box missed
    m = detection_metrics([_pred([[40, 40, 50, 50], BOX], [1, 1], [0.95, 0.9])], targets, num_classes=1)
    assert float(m.map_50) == 1.0 and m.num_objects.values.tolist() == [1]
    # the same boxes without the flags: 3 objects, the 2 detections are correct, recall 2/3
    plain = detection_metrics([_pred([[40, 40, 50, 50], BOX], [1, 1], [0.95, 0.9])],
                              [_gt(targets[0]["boxes"].tolist(), [1, 1, 1])], num_classes=1)
    assert float(plain.map_50) == pytest.approx(67 / 101)  # precision 1 at recall 0 … 0.66, 0 beyond


def test_per_class_values_average_to_the_overall_mean():
    gen = torch.Generator().manual_seed(0)
    preds, targets = [], []
    for _ in range(6):
        corner = torch.rand(5, 2, generator=gen) * 60
        boxes = torch.cat([corner, corner + 8 + torch.rand(5, 2, generator=gen) * 20], 1)
        labels = torch.randint(1, 4, (5,), generator=gen)
        targets.append({"boxes": boxes, "labels": labels})
        preds.append({"boxes": boxes + torch.randn(5, 4, generator=gen) * 2, "labels": labels,
                      "scores": torch.rand(5, generator=gen)})
    m = detection_metrics(preds, targets, num_classes=3)
    assert float(m.map_50) == pytest.approx(float(m.map_50_per_class.mean()), abs=1e-6)
    assert float(m.map_50_95) == pytest.approx(float(m.map_per_class.mean()), abs=1e-6)
    assert 0 < float(m.map_50_95) < float(m.map_50) <= 1


def test_no_ground_truth_gives_nan():
    m = detection_metrics([_pred([BOX], [1], [0.9])], [_gt(np.zeros((0, 4)), [])], num_classes=1)
    assert np.isnan(float(m.map_50)) and np.isnan(float(m.map_per_class[0]))


@pytest.mark.parametrize("preds, targets, num_classes, match", [
    ([_pred([BOX], [0], [0.9])], [_gt([BOX], [1])], 1, r"predictions\[0\]: label 0 outside 1..1"),
    ([_pred([BOX], [1], [0.9])], [_gt([BOX], [2])], 1, r"targets\[0\]: label 2 outside 1..1"),
    ([], [_gt([BOX], [1])], 1, "0 predictions for 1 targets"),
    ([{"boxes": torch.zeros(1, 4), "labels": torch.tensor([1])}], [_gt([BOX], [1])], 1, "lacks scores"),
    ([_pred([BOX], [1], [0.9])], [_gt([BOX], [1])], 0, "num_classes must be an integer >= 1, got 0"),
])
def test_bad_inputs_name_the_problem(preds, targets, num_classes, match):
    with pytest.raises(ValueError, match=match):
        detection_metrics(preds, targets, num_classes=num_classes)
