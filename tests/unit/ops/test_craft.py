"""Craft distillation called directly: layers replaced one at a time, each block trained on the
current (already modified) model, top-down or bottom-up, kept or refused by the rule."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import compressflow.nn.blocks as craft_module  # craft's train_block, looked up when it runs
from compressflow.data import load_splits
from compressflow.nn.surgery import layer_io_batched
from compressflow.ops import OpContext, Schedule, load_checkpoint
from compressflow.ops.craft import craft
from compressflow.ops.train import train

DATA = {"dataset": "digits", "image_size": 8, "channels": 1}

LAYERS = ("layer1.0.conv1", "layer2.0.conv1", "layer3.0.conv1")

FAST = {"layers": LAYERS, "block_epochs": 2, "eval_every": 1, "step_epochs": 1, "schedule": Schedule(epochs=1, lr=0.01)}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("craft")
    return out, train(OpContext("t", "teacher", DATA, out), model="resnet18", width=0.25,
                      schedule=Schedule(epochs=2, batch_size=128)).artifact


@pytest.fixture
def captured(monkeypatch):
    """Every (model as it was, layer, inputs) the craft stage trained a block on."""
    calls = []
    real = craft_module.train_block

    def spy(net, layer, block, x_in, y_out, val, **kw):
        calls.append((copy.deepcopy(net), layer, x_in.clone(), y_out.clone()))
        return real(net, layer, block, x_in, y_out, val, **kw)

    monkeypatch.setattr(craft_module, "train_block", spy)
    return calls


@pytest.mark.parametrize("order", ["top_down", "bottom_up"])
def test_each_block_is_trained_on_the_current_model(teacher, captured, order):
    out, art = teacher
    # no fine-tuning between steps, so only the replaced blocks change what a layer receives
    rec = craft(OpContext(f"c-{order}", "craft", DATA, out), teacher=art, order=order, max_drop=1.0,
                **{**FAST, "step_epochs": 0})
    expected = list(LAYERS) if order == "top_down" else list(LAYERS[::-1])
    assert [layer for _, layer, _, _ in captured] == expected
    assert rec.metrics.step_layer.values.tolist() == expected and str(rec.metrics.order.values) == order
    x = load_splits(**DATA).train.x
    original = load_checkpoint(art).eval()
    for i, (net, layer, x_in, y_out) in enumerate(captured):
        now_in, now_out = layer_io_batched(net.eval(), layer, x)
        torch.testing.assert_close(x_in, now_in)
        torch.testing.assert_close(y_out, now_out)
        first = i == 0
        same_as_teacher = torch.allclose(layer_io_batched(original, layer, x)[0], x_in, atol=1e-4)
        # top-down: every layer after the first sees inputs changed by the blocks upstream of it;
        # bottom-up: the blocks are all downstream, the inputs are the teacher's
        assert same_as_teacher == (first or order == "bottom_up")
    student = load_checkpoint(rec.artifact)
    for layer in LAYERS:
        assert type(student.get_submodule(layer)).__name__ == "ReplacementBlock"
    assert rec.metrics.accepted.values.all()
    assert float(rec.metrics.layers_macs_after) < 0.4 * float(rec.metrics.layers_macs_before)
    assert float(rec.metrics.macs) < float(rec.metrics.teacher_macs)
    assert np.isfinite(rec.metrics.val_accuracy_after.values).all()


def test_a_block_is_kept_by_the_rule_whatever_training_gives(teacher):
    """At ``max_drop: 0`` a block stays only if it *raised* the validation accuracy: whether
    that happens depends on training, so assert the rule on what was measured, step by step."""
    from compressflow.nn.blocks import rejection

    out, art = teacher
    rec = craft(OpContext("c-none", "craft", DATA, out), teacher=art, max_drop=0.0, **FAST)
    m = rec.metrics
    teacher_val = float(m.teacher_val_accuracy)
    student = load_checkpoint(rec.artifact)
    for i, layer in enumerate(m.step_layer.values.tolist()):
        drop = float(m.accuracy_drop[i])
        assert drop == pytest.approx(teacher_val - float(m.spliced_val_accuracy[i]))
        reason = rejection(drop, float(m.macs_before[i]), float(m.macs_after[i]), 0.0)
        assert str(m.reject_reason.values[i]) == reason
        assert bool(m.accepted[i]) == (drop < 0 and float(m.macs_after[i]) < float(m.macs_before[i])) == (not reason)
        kept = type(student.get_submodule(layer)).__name__ == "ReplacementBlock"
        assert kept == bool(m.accepted[i])
    assert set(rec.artifact.meta.get("surgery", {})) == {l for l, a in zip(LAYERS, m.accepted.values) if a}
    kept_macs = sum(float(b) for b, a in zip(m.macs_before.values, m.accepted.values) if a)
    assert float(m.layers_macs_before) == pytest.approx(kept_macs)


def test_craft_refuses_costlier_or_worse_blocks(teacher, monkeypatch):
    """The spliced accuracies pinned (1.0: no drop; 0.0: a drop of the whole teacher accuracy):
    conv1's block costs 2.95× the stem conv and is refused even at 1.0."""
    out, art = teacher
    real = craft_module.train_block
    pinned = {"conv1": 1.0, "layer1.0.conv1": 0.0, "layer2.0.conv1": 1.0}

    def pin(net, layer, block, x_in, y_out, val, **kw):
        blk, m = real(net, layer, block, x_in, y_out, val, **kw)
        m["spliced_val_accuracy"] = pinned[layer]
        return blk, m

    monkeypatch.setattr(craft_module, "train_block", pin)
    rec = craft(OpContext("c-pin", "craft", DATA, out), teacher=art, max_drop=0.02,
                **{**FAST, "layers": tuple(pinned), "step_epochs": 0})
    m = rec.metrics
    teacher_val = float(m.teacher_val_accuracy)
    assert teacher_val > 0.02
    assert m.reject_reason.values.tolist() == ["more MACs than the layer (2.95×)",
                                               f"accuracy drop {teacher_val:.3f} > max_drop 0.02", ""]
    assert m.accepted.values.tolist() == [False, False, True]
    assert rec.artifact.meta["surgery"] == {"layer2.0.conv1": "ds2"}


def test_craft_trains_through_the_context_with_energy_and_progress_per_epoch(teacher, metered_context):
    """craft's fine-tunings (after each kept block and at the end) go through OpContext.fit:
    the record's energy curve is the final fine-tuning's, one cumulative meter read per epoch,
    and every epoch of every fine-tuning is reported (the step ones labelled with the step)."""
    out, art = teacher
    ctx = metered_context("c-energy", "craft", DATA, out)
    rec = craft(ctx, teacher=art, max_drop=1.0, **{**FAST, "schedule": Schedule(epochs=2, lr=0.01)})
    assert rec.metrics.accepted.values.all()  # so every step fine-tuned: 3 one-epoch fits before the final one
    curve = rec.metrics.energy_curve_kwh.values
    assert curve.shape == (2,) and np.isfinite(curve).all() and (np.diff(curve) >= 0).all()
    reads = ctx.meter.reads
    assert reads == len(LAYERS) * FAST["step_epochs"] + 2
    assert curve.tolist() == pytest.approx([1e-6 * (reads - 1), 1e-6 * reads])  # the last two reads
    fits = [e for e in ctx.events if "loss" in e]
    assert [(e.get("step"), e["epoch"], e["of"]) for e in fits] == [(1, 1, 1), (2, 1, 1), (3, 1, 1),
                                                                     (None, 1, 2), (None, 2, 2)]
    assert [e["val_accuracy"] for e in fits[-2:]] == pytest.approx(rec.metrics.val_accuracy_curve.values.tolist())


@pytest.mark.slow
def test_fine_tuning_between_steps_feeds_the_next_block(teacher, captured):
    out, art = teacher
    craft(OpContext("c-ft", "craft", DATA, out), teacher=art, order="bottom_up", max_drop=1.0, **FAST)
    x = load_splits(**DATA).train.x
    original = load_checkpoint(art).eval()
    net, layer, x_in, _ = captured[1]  # after one kept block and one epoch of fine-tuning
    torch.testing.assert_close(x_in, layer_io_batched(net.eval(), layer, x)[0])
    assert not torch.allclose(x_in, layer_io_batched(original, layer, x)[0], atol=1e-4)
