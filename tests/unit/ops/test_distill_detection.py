"""``train_detection`` and ``distill_detection`` on a tiny ``shapes`` set: records, the teacher
checkpoint round trip, τ policies, and spec validation of their parameters."""

import numpy as np
import pytest
import torch

from compressflow.errors import InputError
from compressflow.ops.context import OpContext
from compressflow.ops.distill_detection import _load_detector, distill_detection, train_detection
from compressflow.ops.schedule import Schedule
from compressflow.spec import load_spec

DATA = {"dataset": "shapes", "image_size": 32, "num_images": 12}  # 8 train, 2 val, 2 test images

TINY = {"width": 0.125}

ONE_EPOCH = Schedule(epochs=1, batch_size=4, lr=0.004, optimizer="adam", weight_decay=0.0, warmup_epochs=0)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("det")
    return out, train_detection(OpContext("t", "teacher", DATA, out), schedule=ONE_EPOCH, **TINY)


def test_teacher_record_and_checkpoint(teacher):
    out, rec = teacher
    m = rec.metrics
    assert m["class"].values.tolist() == [1, 2, 3] and m.class_name.values.tolist() == ["circle", "square", "triangle"]
    for name in ("map_50", "map_50_95", "val_map_50"):
        assert np.isnan(float(m[name])) or 0 <= float(m[name]) <= 1
    assert m.map_per_class.dims == ("class",) and m.train_loss.dims == ("epoch",) and len(m.train_loss) == 1
    assert np.isfinite(m.train_loss.values).all() and int(m.params) > 0 and "tau_mean" not in m
    assert m.map_50.attrs["units"] == "1"
    net = _load_detector(rec.artifact, torch.device("cpu"))
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert rec.artifact.meta["detector"]["name"] == "ssd_vgg16"


@pytest.mark.parametrize("temperature, stochastic", [(4.0, False), ({"stochastic": [2, 20]}, True)])
def test_student_distils_at_fixed_or_stochastic_tau(teacher, temperature, stochastic):
    out, rec = teacher
    m = distill_detection(OpContext("s", "student", DATA, out), teacher=rec.artifact, temperature=temperature,
                          schedule=ONE_EPOCH, **TINY).metrics
    assert bool(m.stochastic) is stochastic and np.isfinite(m.train_loss.values).all()
    if stochastic:
        draws = m.tau_draws.values
        assert len(draws) == 2 and ((draws >= 2) & (draws <= 20)).all()  # 8 images / batch 4: 2 steps
        assert int(m.tau_count.sum()) == 2 and float(m.tau_mean) == pytest.approx(draws.mean())
    else:
        assert float(m.tau_mean) == 4.0


def test_a_classification_checkpoint_is_no_detection_teacher(teacher, tmp_path):
    out, rec = teacher
    other = tmp_path / "x.pt"
    torch.save({"model": "resnet18", "state_dict": {}}, other)
    import hashlib

    from compressflow.rundir.records import Artifact

    bad = Artifact("checkpoint", str(other), hashlib.sha256(other.read_bytes()).hexdigest(), {})
    with pytest.raises(InputError, match="is not a train_detection checkpoint"):
        distill_detection(OpContext("s", "student", DATA, out), teacher=bad, schedule=ONE_EPOCH, **TINY)


def _spec(data=None, **params):
    return {"name": "det", "data": {"dataset": "shapes", **(data or {})}, "stages": {
        "teacher": {"op": "train_detection", "params": {"epochs": 1}},
        "student": {"op": "distill_detection", "needs": {"teacher": "teacher"}, "params": params}}}


def test_spec_validates_detection_parameters():
    spec = load_spec(_spec(loss="dml", temperature={"stochastic": [2, 20]}))
    assert spec.stages["student"].op == "distill_detection"
    for data, params, match in (
            ({}, {"loss": "kl"}, r"unknown loss 'kl'; valid choices: ce, cmc, dml, hkd"),
            ({"dataset": "coco"}, {}, r"^data\.dataset: unknown dataset 'coco'; valid choices: cifar10, .*shapes"),
            ({}, {"model": "resnet18"}, r"model 'resnet18' has task 'classification'; valid choices here: ssd_vgg16, "
                                        r"ssdlite_mobilenet_v3"),
            ({"image_size": 8}, {}, r"^shapes: image_size must be an integer >= 24, got 8$"),
            ({}, {"image_size": 32}, r"no longer takes 'image_size': the detection data is set in the spec's data")):
        with pytest.raises(InputError, match=match):
            load_spec(_spec(data, **params))
