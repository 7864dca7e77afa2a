"""The quantize op in-process (slow: QAT runs): the converted model is saved as int8 and reloads to the same
predictions, its recorded accuracy is that model's, sizes and latencies are per arithmetic,
and fine-tuning a checkpoint keeps its architecture."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.ao.nn.quantized as nnq

from compressflow.data import load_splits
from compressflow.errors import InputError
from compressflow.nn.quantization import quantized_weights
from compressflow.nn.training import accuracy, predict
from compressflow.ops import OpContext, Schedule, load_checkpoint
from compressflow.ops.quantize import load_int8, quantize
from compressflow.ops.train import train

pytestmark = pytest.mark.slow  # QAT training runs (~30 s together): not in the fast subset

DATA = {"dataset": "digits", "image_size": 8, "channels": 1}

SHORT = Schedule(epochs=2, batch_size=128, lr=0.1, warmup_epochs=0)

TIMING = {"latency_samples": 16, "latency_rounds": 2}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    out = tmp_path_factory.mktemp("qat")
    ctx = OpContext("quantize-scratch", "qat", DATA, out)
    return quantize(ctx, model="resnet18", width=0.125, schedule=SHORT, seed=3, **TIMING)


def test_saved_model_is_int8_and_is_the_one_scored(scratch):
    m, artifact = scratch.metrics, scratch.artifact
    assert artifact.kind == "int8-model" and artifact.meta["model"] == "resnet18" and artifact.meta["backend"] == "x86"
    int8 = load_int8(artifact)
    convs = [mod for mod in int8.modules() if isinstance(mod, (nnq.Conv2d, nnq.Linear))]
    assert convs and all(mod.weight().dtype == torch.qint8 for mod in convs)
    splits = load_splits(**DATA)
    pred = predict(int8, splits.test).argmax(1)
    assert float(m.accuracy) == pytest.approx((pred == splits.test.y).float().mean().item())
    assert float(m.val_accuracy) == pytest.approx(accuracy(int8, splits.val))
    # the file is the int8 state dict plus a few hundred bytes of metadata
    on_disk = Path(artifact.path).stat().st_size
    int8_bytes, fp32_bytes = (int(m.model_bytes.sel(arithmetic=a)) for a in ("int8", "fp32"))
    assert 0 <= on_disk - int8_bytes < 2048
    assert float(m.size_ratio) == pytest.approx(int8_bytes / fp32_bytes) and float(m.size_ratio) < 0.4


def test_costs_and_timing_are_recorded_per_arithmetic(scratch):
    m = scratch.metrics
    assert list(m.arithmetic.values) == ["int8", "fp32"]
    lat = m.latency_s.values
    assert (lat > 0).all() and float(m.speedup) == pytest.approx(lat[1] / lat[0])
    assert np.isnan(m.inference_energy_kwh.values).all()  # no meter when called by hand: nan, not 0
    assert m.attrs["latency_device"] == "cpu" and m.attrs["latency_batch"] == 1
    assert m.attrs["phase_epochs"] == "quant_delay=1, freeze_bn=1, freeze_observers=2"  # round(0.5, 0.625, 0.75 × 2)
    assert int(m.params) > 0 and float(m.train_flops) > 0 and len(m.val_accuracy_curve) == 2
    # the QAT model before conversion scores like the int8 one after it (a real int8 copy)
    assert abs(float(m.fake_quant_accuracy) - float(m.accuracy)) < 0.05


def test_fine_tuning_a_checkpoint_keeps_its_architecture(tmp_path):
    teacher = train(OpContext("teacher-q", "teacher", DATA, tmp_path), model="wrn_16_1", width=0.5,
                    schedule=Schedule(epochs=1, batch_size=128)).artifact
    rec = quantize(OpContext("quantize-ft", "qat", DATA, tmp_path), pretrained=teacher, quant_delay=0,
                   freeze_bn_at=0.5, freeze_observers_at=0.5, schedule=SHORT, **TIMING)
    assert rec.artifact.meta["model"] == "wrn_16_1" and rec.artifact.meta["kwargs"]["width"] == 0.5
    splits = load_splits(**DATA)
    assert float(rec.metrics.pretrained_accuracy) == pytest.approx(
        accuracy(load_checkpoint(teacher), splits.test))
    assert rec.metrics.attrs["phase_epochs"] == "quant_delay=0, freeze_bn=1, freeze_observers=1"


def test_an_edited_int8_file_is_refused(scratch, tmp_path):
    from compressflow.rundir.files import sha256_file

    art = scratch.artifact
    forged = tmp_path / "forged.pt"
    torch.save({**art.meta, "state_dict": {"x": torch.zeros(2)}}, forged)
    bad = type(art)(art.kind, str(forged), sha256_file(forged), art.meta)
    with pytest.raises(InputError, match=r"is not a compressflow int8 model \((KeyError|RuntimeError): .*; re-run the quantize"):
        load_int8(bad)


def test_a_stopped_qat_run_resumes_to_the_same_int8_model(scratch, tmp_path):
    """Stopped after epoch 1 (a search rung's budget) and resumed: the observers' saved ranges
    (sized on their first batch, so unlike a fresh model's) and the phases come back, and the
    int8 model equals the one of the uninterrupted run (``scratch``)."""
    kw = {"model": "resnet18", "width": 0.125, "schedule": SHORT, "seed": 3, **TIMING}
    quantize(OpContext("quantize-stopped", "qat", DATA, tmp_path, checkpoint_every=1, budget=1), **kw)
    ctx = OpContext("quantize-stopped", "qat", DATA, tmp_path, checkpoint_every=1)
    resumed = quantize(ctx, **kw)
    assert ctx.resumed_from_epoch == 1
    assert float(resumed.metrics.accuracy) == float(scratch.metrics.accuracy)
    ours, theirs = load_int8(resumed.artifact).state_dict(), load_int8(scratch.artifact).state_dict()
    assert set(ours) == set(theirs)
    for name, value in ours.items():
        if isinstance(value, torch.Tensor):
            if value.is_quantized:
                assert torch.equal(value.int_repr(), theirs[name].int_repr()), name
            else:
                assert torch.equal(value, theirs[name]), name
    a, b = quantized_weights(load_int8(resumed.artifact)), quantized_weights(load_int8(scratch.artifact))
    assert a and set(a) == set(b) and all(torch.equal(a[k].int_repr(), b[k].int_repr()) for k in a)
