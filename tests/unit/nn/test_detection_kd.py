"""Detection KD: the head-level forward reproduces torchvision's SSD losses, anchors are paired
through their matched objects, and the loss terms combine as documented."""

import pytest
import torch

from compressflow.nn.detection import build_detector
from compressflow.nn.detection_kd import SSDOutputs, _paired_logits, detection_kd_loss, ssd_outputs
from compressflow.nn.losses import hkd

IMAGES = [torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(2)]

TARGETS = [{"boxes": torch.tensor([[2.0, 3.0, 20.0, 18.0]]), "labels": torch.tensor([1])},
           {"boxes": torch.tensor([[10.0, 10.0, 30.0, 31.0], [0.0, 0.0, 12.0, 12.0]]), "labels": torch.tensor([2, 1])}]


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    student = build_detector("ssdlite_mobilenet_v3", num_classes=2, image_size=32, width=0.25)
    teacher = build_detector("ssd_vgg16", num_classes=2, image_size=32, width=0.125).eval()
    return student, teacher


def test_head_level_forward_gives_torchvisions_own_losses(pair):
    student, _ = pair
    own = student(IMAGES, TARGETS)  # torchvision's SSD.forward in train mode
    ours = detection_kd_loss(student, None, IMAGES, TARGETS, loss="ce")
    assert torch.allclose(ours["bbox_regression"], own["bbox_regression"])
    assert torch.allclose(ours["classification"], own["classification"])
    assert float(ours["kd"]) == 0.0
    assert torch.allclose(ours["total"], own["bbox_regression"] + own["classification"])
    out = ssd_outputs(student, IMAGES, TARGETS)
    # every object gets at least its best anchor (SSD's matcher), and only real objects are matched
    for matched, target in zip(out.matched, out.targets):
        assert set(matched[matched >= 0].tolist()) == set(range(len(target["labels"])))


def test_alpha_weights_the_kd_term_beside_ssds_own_losses(pair):
    student, teacher = pair
    terms = {a: detection_kd_loss(student, teacher, IMAGES, TARGETS, loss="hkd", tau=4.0, alpha=a) for a in (0, 0.5, 1)}
    box, cls, kd = (terms[0.5][k] for k in ("bbox_regression", "classification", "kd"))
    assert torch.isfinite(kd) and kd > 0
    # SSD's own losses at full weight, the KD term weighted by alpha
    assert torch.allclose(terms[0]["total"], box + cls)
    assert torch.allclose(terms[1]["total"], box + cls + kd)
    assert torch.allclose(terms[0.5]["total"], box + cls + 0.5 * kd)
    # hkd's KD term carries τ²: without it, it is τ² = 16 times smaller
    plain = detection_kd_loss(student, teacher, IMAGES, TARGETS, loss="hkd", tau=4.0, tau_squared=False)
    assert torch.allclose(kd, 16 * plain["kd"], rtol=1e-5)


def test_gradients_reach_the_student_only(pair):
    student, teacher = pair
    student.zero_grad()
    detection_kd_loss(student, teacher, IMAGES, TARGETS, loss="dml", tau=2.0)["total"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_anchors_are_paired_through_their_objects():
    # one image, two objects; the teacher has 4 anchors, the student 3
    t_logits = torch.tensor([[1.0, 0.0, 0.0], [9.0, 9.0, 9.0], [0.0, 4.0, 0.0], [3.0, 2.0, 0.0]])
    target = {"boxes": torch.zeros(2, 4), "labels": torch.tensor([2, 1])}
    teacher = SSDOutputs([target], {"cls_logits": t_logits[None]}, [], [torch.tensor([0, -1, 1, 0])])
    s_logits = torch.arange(9.0).view(3, 3)
    student = SSDOutputs([target], {"cls_logits": s_logits[None]}, [], [torch.tensor([1, -1, 0])])
    s, t, labels = _paired_logits(student, teacher)
    assert s.tolist() == [[0, 1, 2], [6, 7, 8]]  # the student's two matched anchors
    # anchor 0 → object 1: the teacher's anchor 2; anchor 2 → object 0: mean of the teacher's anchors 0 and 3
    assert t.tolist() == [[0, 4, 0], [2, 1, 0]]
    assert labels.tolist() == [1, 2]
    assert torch.allclose(hkd(s, t, labels, 2.0, alpha=1.0), 4 * torch.nn.functional.kl_div(
        torch.log_softmax(s / 2, 1), torch.log_softmax(t / 2, 1), reduction="batchmean", log_target=True))
