"""The blockwise ops called directly: cached and recomputed inputs/targets agree, a replaced
layer learns its layer and costs less, the assembly's threshold, cost and rejection rules, and
energy and progress reported per epoch through the op context."""

from pathlib import Path

import numpy as np
import pytest
import torch

from compressflow.data import load_splits
from compressflow.nn.surgery import layer_io
from compressflow.ops import OpContext, Schedule, load_checkpoint
from compressflow.ops.blockwise import _layer_data, activations, replace_layer
from compressflow.ops.train import train

DATA = {"dataset": "digits", "image_size": 8, "channels": 1}


@pytest.fixture(scope="module")
def teacher_and_cache(tmp_path_factory):
    out = tmp_path_factory.mktemp("bw")
    teacher = train(OpContext("t", "teacher", DATA, out), model="resnet18", width=0.25,
                    schedule=Schedule(epochs=2, batch_size=128)).artifact
    cache = activations(OpContext("a", "acts", DATA, out), model=teacher).artifact
    return out, teacher, cache


def test_cache_and_recompute_give_the_same_inputs_and_targets(teacher_and_cache):
    _, teacher, cache = teacher_and_cache
    net = load_checkpoint(teacher).eval()
    splits = load_splits(**DATA)
    assert len(cache.meta["layers"]) == 17  # ResNet18: stem + 16 3x3 convs (1x1 shortcuts excluded)
    for layer in (cache.meta["layers"][0], cache.meta["layers"][9]):
        a_in, a_out = _layer_data(net, layer, splits, cache)
        b_in, b_out = _layer_data(net, layer, splits, None)
        assert a_in.shape[0] == len(splits.train)
        torch.testing.assert_close(a_in, b_in, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(a_out, b_out, rtol=1e-5, atol=1e-5)


def test_replace_layer_learns_the_layer_and_costs_less(teacher_and_cache):
    out, teacher, cache = teacher_and_cache
    layer = "layer2.1.conv1"
    rec = replace_layer(OpContext("r", "blocks", DATA, out), teacher=teacher, activations=cache, layer=layer,
                        epochs=4, eval_every=2)
    m = rec.metrics
    net = load_checkpoint(teacher).eval()
    x_in, y_out = layer_io(net, layer, load_splits(**DATA).train.x)
    assert float(m.mse) < float(((y_out - y_out.mean()) ** 2).mean())  # better than predicting the mean
    assert float(m.macs_after) < 0.4 * float(m.macs_before)
    assert 0 <= float(m.spliced_val_accuracy) <= 1
    assert Path(rec.artifact.path).exists() and rec.artifact.meta == {"layer": layer, "block": "ds2"}


def test_splicing_a_copy_of_the_layer_changes_nothing(teacher_and_cache):
    import copy

    from compressflow.nn.surgery import spliced

    _, teacher, _ = teacher_and_cache
    net = load_checkpoint(teacher).eval()
    x = load_splits(**DATA).val.x[:16]
    twin = spliced(net, {"layer2.0.conv1": copy.deepcopy(net.get_submodule("layer2.0.conv1"))})
    torch.testing.assert_close(twin(x), net(x))


def test_assemble_threshold_and_failed_layers(teacher_and_cache, tmp_path):
    from compressflow.ops.blockwise import assemble
    from compressflow.rundir.records import LedgerEntry

    out, teacher, cache = teacher_and_cache
    tasks = []
    for layer, drop in (("layer1.0.conv1", 0.01), ("layer1.0.conv2", 0.05), ("layer1.1.conv1", 0.02)):
        rec = replace_layer(OpContext(f"r-{layer}", "blocks", DATA, out), teacher=teacher, activations=cache,
                            layer=layer, epochs=1, eval_every=1)
        rec.metrics["accuracy_drop"] = drop  # pin the measured drop to test the threshold exactly
        tasks.append(LedgerEntry(f"k-{layer}", "blocks", "replace_layer", {"layer": layer}, status="ok", record=rec))
    tasks.append(LedgerEntry("k-failed", "blocks", "replace_layer", {"layer": "layer2.0.conv1"}, status="failed",
                            error="RuntimeError: boom\nTraceback ..."))
    rec = assemble(OpContext("s", "student", DATA, tmp_path), teacher=teacher, blocks=tasks, max_drop=0.02,
                   schedule=Schedule(epochs=1))
    accepted = dict(zip(rec.metrics.layer.values.tolist(), rec.metrics.accepted.values.tolist()))
    assert accepted == {"layer1.0.conv1": True, "layer1.0.conv2": False, "layer1.1.conv1": False,
                        "layer2.0.conv1": False}
    reasons = dict(zip(rec.metrics.layer.values.tolist(), rec.metrics.reject_reason.values.tolist()))
    assert reasons == {"layer1.0.conv1": "", "layer1.0.conv2": "accuracy drop 0.050 > max_drop 0.02",
                       "layer1.1.conv1": "accuracy drop 0.020 = max_drop 0.02",  # the drop must be *below* it
                       "layer2.0.conv1": "task failed: RuntimeError: boom"}
    student = load_checkpoint(rec.artifact)
    assert type(student.get_submodule("layer1.0.conv1")).__name__ == "ReplacementBlock"
    assert isinstance(student.get_submodule("layer1.0.conv2"), torch.nn.Conv2d)
    assert rec.artifact.meta["surgery"] == {"layer1.0.conv1": "ds2"}


def test_assemble_refuses_a_block_costlier_than_its_layer(teacher_and_cache, tmp_path):
    """The stem conv1 (1 → 16 channels at width 0.25 on greyscale) costs 9·1·16 = 144 MACs per
    pixel; its ds2 block costs 9·1 + 1·16 + 9·16 + 16·16 = 425 (depthwise 3×3, pointwise, twice):
    2.95× the layer. It must be refused even with a perfect accuracy (drop pinned to −0.1)."""
    from compressflow.ops.blockwise import assemble
    from compressflow.rundir.records import LedgerEntry

    out, teacher, cache = teacher_and_cache
    tasks = []
    for layer in ("conv1", "layer2.0.conv2"):
        rec = replace_layer(OpContext(f"r-{layer}", "blocks", DATA, out), teacher=teacher, activations=cache,
                            layer=layer, epochs=1, eval_every=1)
        rec.metrics["accuracy_drop"] = -0.1
        tasks.append(LedgerEntry(f"k-{layer}", "blocks", "replace_layer", {"layer": layer}, status="ok", record=rec))
    m = tasks[0].record.metrics
    hw = 8 * 8
    assert float(m.macs_before) == 9 * 1 * 16 * hw and float(m.macs_after) == (9 * 1 + 1 * 16 + 9 * 16 + 16 * 16) * hw
    rec = assemble(OpContext("s", "student", DATA, tmp_path), teacher=teacher, blocks=tasks, max_drop=1.0,
                   schedule=Schedule(epochs=1))
    reasons = dict(zip(rec.metrics.layer.values.tolist(), rec.metrics.reject_reason.values.tolist()))
    assert reasons == {"conv1": "more MACs than the layer (2.95×)", "layer2.0.conv2": ""}
    assert rec.metrics.accepted.values.tolist() == [False, True]
    assert rec.artifact.meta["surgery"] == {"layer2.0.conv2": "ds2"}
    assert float(rec.metrics.layers_macs_after) < float(rec.metrics.layers_macs_before)


def test_rejection_rule():
    from compressflow.nn.blocks import rejection

    assert rejection(0.0, 100, 40, 0.02) == ""
    assert rejection(-0.5, 100, 40, 0.0) == ""  # a block that improves accuracy is fine
    assert rejection(0.0, 100, 100, 0.02) == "as many MACs as the layer (1.00×)"
    assert rejection(0.031, 432, 475, 0.02) == "more MACs than the layer (1.10×); accuracy drop 0.031 > max_drop 0.02"
    assert rejection(float("nan"), 100, 40, 0.02) == "accuracy drop not measured (nan)"


def test_assemble_trains_through_the_context_with_energy_and_progress_per_epoch(teacher_and_cache, tmp_path,
                                                                                metered_context):
    """assemble fine-tunes through OpContext.fit: one meter read per epoch becomes its
    cumulative energy curve, and every epoch is reported as progress."""
    from compressflow.ops.blockwise import assemble
    from compressflow.rundir.records import LedgerEntry

    out, teacher, cache = teacher_and_cache
    layer = "layer1.0.conv1"
    block = replace_layer(OpContext("r-energy", "blocks", DATA, out), teacher=teacher, activations=cache, layer=layer,
                          epochs=1, eval_every=1)
    tasks = [LedgerEntry("k-energy", "blocks", "replace_layer", {"layer": layer}, status="ok", record=block)]
    ctx = metered_context("s-energy", "student", DATA, tmp_path)
    rec = assemble(ctx, teacher=teacher, blocks=tasks, max_drop=1.0,
                   schedule=Schedule(epochs=3, lr=0.01, warmup_epochs=0))
    curve = rec.metrics.energy_curve_kwh.values
    assert curve.shape == (3,) and np.isfinite(curve).all() and (np.diff(curve) >= 0).all()
    assert curve.tolist() == pytest.approx([1e-6, 2e-6, 3e-6])  # the meter's reads, one per epoch, in order
    assert rec.metrics.energy_curve_kwh.attrs["units"].startswith("kWh (cumulative")
    epochs = [e for e in ctx.events if "loss" in e]
    assert [(e["epoch"], e["of"]) for e in epochs] == [(1, 3), (2, 3), (3, 3)]
    assert [e["val_accuracy"] for e in epochs] == pytest.approx(rec.metrics.val_accuracy_curve.values.tolist())
    assert all(np.isfinite(e["loss"]) for e in epochs)
