"""``train_detection`` and ``distill_detection`` on a tiny ``shapes`` set: records, the teacher
checkpoint round trip, τ policies, and spec validation of their parameters."""

import numpy as np
import pytest
import torch

from compressflow.engine.spec import load_spec
from compressflow.errors import InputError, SpecError
from compressflow.ops.context import OpContext
from compressflow.ops.distill_detection import _load_detector, distill_detection, train_detection
from compressflow.ops.schedule import Schedule

TINY = {"image_size": 32, "num_images": 12, "width": 0.125}  # 8 train, 2 val, 2 test images
ONE_EPOCH = Schedule(epochs=1, batch_size=4, lr=0.004, optimizer="adam", weight_decay=0.0, warmup_epochs=0)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("det")
    return out, train_detection(OpContext("t", "teacher", {}, out), schedule=ONE_EPOCH, **TINY)


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
    m = distill_detection(OpContext("s", "student", {}, out), teacher=rec.artifact, temperature=temperature,
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

    from compressflow.engine.records import Artifact

    bad = Artifact("checkpoint", str(other), hashlib.sha256(other.read_bytes()).hexdigest(), {})
    with pytest.raises(InputError, match="is not a train_detection checkpoint"):
        distill_detection(OpContext("s", "student", {}, out), teacher=bad, schedule=ONE_EPOCH, **TINY)


def _spec(**params):
    return {"name": "det", "stages": {
        "teacher": {"op": "train_detection", "params": {"epochs": 1}},
        "student": {"op": "distill_detection", "needs": {"teacher": "teacher"}, "params": params}}}


def test_spec_validates_detection_parameters():
    spec = load_spec(_spec(loss="dml", temperature={"stochastic": [2, 20]}, dataset="shapes"))
    assert spec.stages["student"].op == "distill_detection"
    for params, match in (({"loss": "kl"}, "unknown loss 'kl'; valid choices: hkd, cmc, dml, ce"),
                          ({"dataset": "coco"}, "unknown dataset 'coco'; valid choices: shapes, voc"),
                          ({"model": "resnet18"}, "unknown model 'resnet18'; valid choices: ssd_vgg16"),
                          ({"image_size": 8}, "image_size")):
        with pytest.raises(SpecError, match=match):
            load_spec(_spec(**params))
