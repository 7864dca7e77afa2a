"""QAT pieces against independent counts: a converted model holds int8 weights (one byte per
float weight) and runs int8 kernels close to its fake-quantized self; the phases switch what
they say when they say it and come back on resume; timing splits energy per sample."""

import copy
import itertools

import pytest
import torch
import torch.ao.nn.intrinsic.qat as nniqat
import torch.ao.nn.quantized as nnq
from torch import nn

from compressflow.nn.models import build_model
from compressflow.nn.quantization import (QATPhases, _backend, convert_int8, fuse_float, prepare_qat, quantized_weights,
                                          saved_bytes, time_models)

SHAPE = (1, 8, 8)


def _calibrated(name="resnet18", width=0.25, seed=0):
    torch.manual_seed(seed)
    net = build_model(name, num_classes=10, in_channels=1, width=width)
    float_weights = sum(m.weight.numel() for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    prepared = prepare_qat(net, SHAPE)
    prepared.train()
    with torch.no_grad():
        for _ in range(3):
            prepared(torch.randn(32, *SHAPE))  # observers see data: scales and zero points are set
    return prepared.eval(), float_weights, net


def test_converted_model_is_int8_one_byte_per_weight():
    prepared, float_weights, net = _calibrated()
    int8 = convert_int8(prepared)
    convs = [m for m in int8.modules() if isinstance(m, (nnq.Conv2d, nnq.Linear))]
    assert convs and not any(isinstance(m, (nn.Conv2d, nn.Linear)) and not isinstance(m, (nnq.Conv2d, nnq.Linear))
                             for m in int8.modules())
    assert all(m.weight().dtype == torch.qint8 for m in convs)
    weights = quantized_weights(int8)
    assert {t.dtype for t in weights.values()} <= {torch.qint8, torch.quint8}
    assert sum(t.numel() for t in weights.values()) == float_weights  # every conv/linear weight, quantized
    fp32 = saved_bytes(fuse_float(net))
    # 1 byte per weight instead of 4: above the weights' own bytes, well under a third of the float file
    assert float_weights <= saved_bytes(int8) < 0.35 * fp32
    assert fp32 > 4 * float_weights


def test_int8_kernels_agree_with_the_fake_quantized_model():
    prepared, _, _ = _calibrated()
    int8 = convert_int8(prepared)
    x = torch.randn(64, *SHAPE)
    with torch.no_grad():
        fake, real = prepared(x), int8(x)
    # the logits' own quantization step (the last scale of the converted graph)
    step = float(int8.state_dict()[[k for k in int8.state_dict() if k.endswith("scale")][-1]])
    # the same arithmetic up to int8 rounding through ~20 layers (measured: 4 steps, r = 0.93)
    assert (fake - real).abs().max() <= 6 * step
    assert torch.corrcoef(torch.stack([fake.flatten(), real.flatten()]))[0, 1] > 0.85
    assert not torch.equal(fake, real)  # and really a different (integer) computation


def test_the_copy_time_models_runs_is_the_same_int8_model():
    # time_models times deep copies (fresh weight packing, see its docstring): a copy must
    # compute exactly what the model does, at every batch shape, after it ran another shape
    prepared, _, _ = _calibrated()
    int8 = convert_int8(prepared)
    x = torch.randn(40, *SHAPE)
    with torch.no_grad(), _backend("x86"):
        big = int8(x)
        twin = copy.deepcopy(int8)
        for chunk in (x[:1], x[:16], x):
            assert torch.equal(twin(chunk), int8(chunk))
        assert torch.equal(big[:1], twin(x[:1]))  # and per sample, whatever the batch


def _flags(model):
    fq = [m for m in model.modules() if hasattr(m, "fake_quant_enabled")]
    bn = [m for m in model.modules() if isinstance(m, (nniqat.ConvBn2d, nniqat.ConvBnReLU2d))]
    return ({int(m.fake_quant_enabled) for m in fq}, {int(m.observer_enabled) for m in fq},
            {bool(m.freeze_bn) for m in bn})


def test_phases_switch_after_their_epochs_and_come_back_on_resume():
    prepared, _, _ = _calibrated()
    phases = QATPhases(prepared, quant_delay=2, freeze_bn=3, freeze_observers=4)
    seen = [_flags(prepared)]
    for epoch in range(1, 5):
        phases.on_epoch(epoch)
        seen.append(_flags(prepared))
    assert seen == [({0}, {1}, {False}), ({0}, {1}, {False}), ({1}, {1}, {False}), ({1}, {1}, {True}),
                    ({1}, {0}, {True})]
    # a fresh model restored from the saved state (as a resumed fit does) is in the same phase
    fresh, _, _ = _calibrated()
    other = QATPhases(fresh, quant_delay=2, freeze_bn=3, freeze_observers=4)
    fresh.load_state_dict(prepared.state_dict())  # the flags that are buffers ...
    other.load_state_dict(phases.state_dict())  # ... and BN's freeze, which is not
    assert _flags(fresh) == _flags(prepared) == ({1}, {0}, {True})


def test_phase_zero_applies_before_training():
    prepared, _, _ = _calibrated()
    QATPhases(prepared, quant_delay=0, freeze_bn=0, freeze_observers=5)
    assert _flags(prepared) == ({1}, {1}, {True})


class _Counting(nn.Module):
    log: dict[str, list[int]] = {}  # a class attribute: shared with the deep copies time_models runs

    def __init__(self, tag):
        super().__init__()
        self.tag, self.own = tag, []
        _Counting.log[tag] = []

    def forward(self, x):
        _Counting.log[self.tag].append(len(x))
        self.own.append(len(x))
        return x.sum(dim=(1, 2, 3))


def test_time_models_interleaves_and_splits_energy_per_sample():
    a, b = _Counting("a"), _Counting("b")
    counter = itertools.count()
    kwh = lambda: float(next(counter))  # noqa: E731  (+1 kWh per read: each pass costs exactly 1)
    timing = time_models({"a": a, "b": b}, torch.zeros(10, *SHAPE), batch_size=4, rounds=3, energy=kwh)
    # one warm-up pass, then three rounds, all on copies: the models passed in never run
    assert _Counting.log["a"] == _Counting.log["b"] == [4, 4, 2] + [4, 4, 2] * 3
    assert a.own == b.own == []
    assert timing.samples == 10 and timing.rounds == 3 and timing.batch_size == 4
    # each of a model's 3 passes read 2 consecutive counter values: 1 kWh, over 10 samples
    assert timing.energy_kwh == pytest.approx({"a": 3 / 30, "b": 3 / 30})
    assert all(t > 0 for t in timing.latency_s.values())
    no_meter = time_models({"a": _Counting("c")}, torch.zeros(3, *SHAPE))
    assert no_meter.energy_kwh["a"] != no_meter.energy_kwh["a"]  # nan without a meter


def test_untraceable_model_is_a_clear_error():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: FX cannot trace it
                return self.conv(x)
            return -self.conv(x)

    with pytest.raises(ValueError, match=r"^the model cannot be traced for FX quantization \(TraceError: "):
        prepare_qat(Branchy(), SHAPE)
    with pytest.raises(ValueError, match=r"^backend: 'tpu' is not supported by this torch build; it has "):
        prepare_qat(nn.Conv2d(1, 2, 3), SHAPE, backend="tpu")
