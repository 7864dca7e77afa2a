"""The SSD teacher and SSDlite student build from scratch, take a training step with finite
losses and detect in eval mode, on a 2-image batch of small images."""

import pytest
import torch
from torchvision.models.detection.ssd import SSD

from compressflow.errors import InputError
from compressflow.nn.detection import build_detector
from compressflow.registries import MODELS, UnknownNameError

BATCH = [torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(2)]

TARGETS = [{"boxes": torch.tensor([[2.0, 3.0, 20.0, 18.0]]), "labels": torch.tensor([1])},
           {"boxes": torch.tensor([[10.0, 10.0, 30.0, 31.0], [0.0, 0.0, 8.0, 8.0]]), "labels": torch.tensor([3, 2])}]


@pytest.mark.parametrize("name, width, anchors", [
    ("ssd_vgg16", 0.125, [4, 6, 6, 6, 4, 4]),    # SSD300-VGG16's aspect ratios per map
    ("ssdlite_mobilenet_v3", 0.25, [6] * 6),     # SSDlite320's: [2, 3] on all six maps
])
def test_detector_trains_a_step_and_detects(name, width, anchors):
    torch.manual_seed(0)
    model = build_detector(name, num_classes=3, image_size=32, width=width)
    assert isinstance(model, SSD) and model.head.classification_head.num_columns == 4  # 3 classes + background
    assert model.anchor_generator.num_anchors_per_location() == anchors
    assert len(model.backbone(torch.zeros(2, 3, 32, 32))) == 6  # six feature maps, even at 32 px
    model.train()
    before = [p.detach().clone() for p in model.parameters()]
    losses = model(BATCH, TARGETS)
    assert set(losses) == {"bbox_regression", "classification"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    torch.optim.SGD(model.parameters(), lr=1e-3).step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    model.eval()
    with torch.no_grad():
        out = model(BATCH)
    assert len(out) == 2
    for det in out:
        n = len(det["scores"])
        assert det["boxes"].shape == (n, 4) and det["labels"].shape == (n,) and n <= 100
        assert ((det["labels"] >= 1) & (det["labels"] <= 3)).all()
        assert (det["boxes"] >= 0).all() and (det["boxes"] <= 32).all()  # clipped to the image


def test_width_shrinks_the_model_and_teacher_is_larger():
    count = {key: sum(p.numel() for p in build_detector(name, num_classes=3, image_size=32, width=w).parameters())
             for key, (name, w) in {"vgg_small": ("ssd_vgg16", 0.125), "vgg": ("ssd_vgg16", 0.25),
                                     "lite": ("ssdlite_mobilenet_v3", 0.25)}.items()}
    assert count["vgg_small"] < count["vgg"] and count["lite"] < count["vgg"]


@pytest.mark.parametrize("kwargs, match", [
    ({"num_classes": 0}, "num_classes must be an integer >= 1 .*got 0"),
    ({"num_classes": 3, "image_size": 16}, "image_size must be an integer >= 32, got 16"),
    ({"num_classes": 3, "width": 0}, "width must be a number > 0, got 0"),
])
def test_bad_options(kwargs, match):
    with pytest.raises(InputError, match=match):
        build_detector("ssd_vgg16", **kwargs)


def test_registry_lists_the_detectors():
    assert MODELS.list(task="detection") == ["ssd_vgg16", "ssdlite_mobilenet_v3"]
    with pytest.raises(UnknownNameError, match="valid choices: ssd_vgg16, ssdlite_mobilenet_v3"):
        build_detector("yolo", num_classes=3)
