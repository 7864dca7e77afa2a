"""The distill stage in-process: teacher frozen, τ per batch reaches the loss, records."""

from pathlib import Path

import numpy as np
import pytest
import torch

from compressflow.data import load_splits
from compressflow.nn import losses
from compressflow.ops import OpContext, Schedule
from compressflow.ops import distill as distill_module
from compressflow.ops.train import train

DATA = {"dataset": "digits", "image_size": 8, "channels": 1}

SMALL = {"model": "wrn_16_1", "width": 0.5, "schedule": Schedule(epochs=1, batch_size=128)}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    return train(OpContext("teacher-key", "teacher", DATA, out), **SMALL).artifact


def test_teacher_unchanged_and_tau_reaches_loss(teacher, tmp_path, monkeypatch):
    loaded, seen_tau = [], []

    def spy_load(artifact, device):
        net = distill_module.__dict__["_real_load"](artifact, device)
        loaded.append((net, {k: v.clone() for k, v in net.state_dict().items()}))
        return net

    def spy_hkd(s, t, y, tau, *, alpha):
        seen_tau.append(float(tau))
        return losses.hkd(s, t, y, tau, alpha=alpha)

    monkeypatch.setitem(distill_module.__dict__, "_real_load", distill_module.load_checkpoint)
    monkeypatch.setattr(distill_module, "load_checkpoint", spy_load)
    monkeypatch.setattr(distill_module.LOSSES, "_items", {**distill_module.LOSSES._items, "hkd": spy_hkd})
    digest_before = Path(teacher.path).read_bytes()
    rec = distill_module.distill(OpContext("student-key", "kd", DATA, tmp_path), teacher=teacher,
                                 temperature={"stochastic": [2, 20]}, seed=7, **SMALL)
    (net, before), = loaded
    for name, value in net.state_dict().items():  # weights and BN statistics untouched
        assert torch.equal(value, before[name]), name
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert Path(teacher.path).read_bytes() == digest_before
    m = rec.metrics
    steps = int(np.ceil(len(load_splits(**DATA).train) / 128))  # 1 epoch of batch 128
    assert m.sizes["step"] == len(seen_tau) == steps  # one draw per batch
    # the τ the loss saw, batch by batch, is exactly the recorded sequence
    assert m["tau_draws"].values.tolist() == seen_tau
    assert int(m["tau_count"].sum()) == len(seen_tau)
    assert bool(m["stochastic"]) and 2 <= float(m["tau_mean"]) <= 20


def test_same_seed_same_student_and_taus(teacher, tmp_path):
    runs = [distill_module.distill(OpContext(f"k{i}", "kd", DATA, tmp_path / str(i)), teacher=teacher,
                                   temperature={"stochastic": [2, 20]}, seed=3, **SMALL) for i in range(2)]
    a, b = (r.metrics for r in runs)
    assert a["tau_draws"].values.tolist() == b["tau_draws"].values.tolist()
    assert float(a["accuracy"]) == float(b["accuracy"])


def test_fixed_tau_records_and_teacher_flops(teacher, tmp_path):
    rec = distill_module.distill(OpContext("k", "kd", DATA, tmp_path), teacher=teacher, loss="cmc",
                                 temperature=4, **SMALL)
    m = rec.metrics
    assert float(m["tau_mean"]) == 4.0 and not bool(m["stochastic"]) and "tau_draws" not in m
    # training FLOPs include the teacher's forward: more than the student's own ~3x forward
    per_sample = float(m["train_flops"]) / int(m["train_samples"])
    assert per_sample > 3.5 * 2 * float(m["macs"])
    assert rec.artifact is not None and Path(rec.artifact.path).exists()


def _student(teacher, tmp_path, name, **params):
    rec = distill_module.distill(OpContext(name, "kd", DATA, tmp_path / name), teacher=teacher, temperature=6,
                                 seed=1, **SMALL, **params)
    return rec, torch.load(rec.artifact.path, map_location="cpu", weights_only=True)


def test_tau_squared_changes_training_and_dml_with_it_is_hkd(teacher, tmp_path):
    """The switch reaches the loss: DML without τ² trains another student than with it, and
    DML × τ² is HKD term for term (the same weights, bit for bit)."""
    hkd, w_hkd = _student(teacher, tmp_path, "hkd", loss="hkd")
    dml2, w_dml2 = _student(teacher, tmp_path, "dml2", loss="dml", tau_squared=True)
    dml, w_dml = _student(teacher, tmp_path, "dml", loss="dml")
    tensors = lambda w: {k: v for k, v in (w.get("state_dict", w)).items() if torch.is_tensor(v)}  # noqa: E731
    a, b, c = tensors(w_hkd), tensors(w_dml2), tensors(w_dml)
    assert a.keys() == b.keys() and a
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())
    assert float(hkd.metrics["train_loss"].values.ravel()[-1]) == float(dml2.metrics["train_loss"].values.ravel()[-1])
