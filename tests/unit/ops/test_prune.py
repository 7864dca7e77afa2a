"""The prune op called directly: its options, biased data keeping a fraction of chosen classes,
and the pruning bad-input cases."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch

from compressflow import SpecError, load_spec
from compressflow.data import biased, load_splits
from compressflow.ops import OpContext, Schedule, load_checkpoint
from compressflow.ops.prune import prune
from compressflow.ops.train import train
from compressflow.spec import check_models
from tests.support.specs import PRUNING

DATA = {"dataset": "digits", "image_size": 8, "channels": 1}

FAST = {"epochs": 1, "batch_size": 256}


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    out = tmp_path_factory.mktemp("orig")
    art = train(OpContext("o", "original", DATA, out), model="resnet18", width=0.25,
                schedule=Schedule(epochs=2, batch_size=128)).artifact
    return out, art


def _prune_seen(monkeypatch, out, art, **options):
    """Run prune (sparsity 0.75, one epoch) and return its record, its final weights and the
    class counts of every training split it fitted on (a spy on the fit it calls)."""
    import compressflow.nn.training as fit_module  # OpContext.fit's fit

    counts, real = [], fit_module.fit

    def spy(model, splits, **kw):
        counts.append(np.bincount(splits.train.y.numpy(), minlength=10))
        return real(model, splits, **kw)

    with monkeypatch.context() as m:
        m.setattr(fit_module, "fit", spy)
        rec = prune(OpContext("p", "pruned", DATA, out), model=art, sparsity=0.75, schedule=Schedule(**FAST),
                    **options)
    return rec, load_checkpoint(rec.artifact).state_dict(), counts


@pytest.fixture(scope="module")
def plain(original, tmp_path_factory):
    """The same prune with no option: what each option must change."""
    mp = pytest.MonkeyPatch()
    try:
        return _prune_seen(mp, tmp_path_factory.mktemp("plain"), original[1])
    finally:
        mp.undo()


@pytest.mark.parametrize("options", [{"rounds": 3}, {"distill": "kd"}, {"distill": "at"}, {"distill": "kd+at"},
                                     {"biased_classes": (3, 5), "biased_keep": 0.2}])
def test_prune_options(original, plain, monkeypatch, options):
    out, art = original
    rec, weights, counts = _prune_seen(monkeypatch, out, art, **options)
    m = rec.metrics
    assert abs(float(m.sparsity) - 0.75) < 0.01 and np.isfinite(float(m.accuracy))
    base_rec, base_weights, base_counts = plain
    # the option changed what was trained: other final weights than the same seed without it
    assert any(not torch.equal(weights[k], base_weights[k]) for k in base_weights)
    if "rounds" in options:
        assert m.epoch.size == 3 and len(counts) == 3  # one retraining epoch per round
        return
    assert len(counts) == 1
    if "biased_classes" in options:  # the training split seen by fit lost 80 % of classes 3 and 5
        full = load_splits(**DATA).train.y.numpy()
        expected = np.bincount(full, minlength=10)
        expected[[3, 5]] = np.round(0.2 * expected[[3, 5]])
        np.testing.assert_array_equal(counts[0], expected)
        np.testing.assert_array_equal(base_counts[0], np.bincount(full, minlength=10))
    else:  # a teacher term in the loss: another loss from the first epoch on, on the same data
        np.testing.assert_array_equal(counts[0], base_counts[0])
        assert float(m.train_loss[0]) != pytest.approx(float(base_rec.metrics.train_loss[0]), rel=1e-3)


def test_biased_data_keeps_a_fraction_of_chosen_classes():
    splits = load_splits(**DATA)
    b = biased(splits, (3, 5), 0.2, seed=0)
    for c in range(10):
        n, k = int((splits.train.y == c).sum()), int((b.train.y == c).sum())
        assert k == (round(0.2 * n) if c in (3, 5) else n)
    assert len(b.test) == len(splits.test)


@pytest.mark.parametrize("path, value, pattern", [
    (["stages", "pruned", "sweep", "sparsity"], [0.5, 1.0],
     r"^stages\.pruned\.sweep\.sparsity: Input should be less than 1 \(got 1\.0\)$"),
    (["stages", "pruned", "sweep", "sparsity"], [0],
     r"^stages\.pruned\.sweep\.sparsity: Input should be greater than 0 \(got 0\)$"),
    (["stages", "pruned", "sweep", "method"], ["magnitude", "lottery"],
     r"^stages\.pruned\.sweep\.method: Input should be 'magnitude', 'reinit', 'random' or 'filters' \(got 'lottery'\)$"),
    (["stages", "pruned", "params", "rounds"], 3,
     r"^stages\.pruned\.params\.rounds: iterative pruning \(rounds > 1\) is for method 'magnitude' only, not 'reinit'; "),
    (["stages", "probe_original", "params", "layers"], ["layer9"],
     r"^stages\.probe_original\.params\.layers: 'layer9' is not a module of resnet18; e\.g\. conv1, bn1, "),
    (["stages", "probe_original", "params", "probe"], 64,
     r"^stages\.similarity\.needs: a and b capture different probe sets \(probe 128 of test vs probe 64 of test\); "),
    (["stages", "similarity", "needs", "b"], "original",
     r"^stages\.similarity\.needs\.b: stage 'original' is a 'train' stage; svcca compares 'capture' stages$"),
])
def test_bad_pruning_spec(path, value, pattern):
    spec = copy.deepcopy(PRUNING)
    node = spec
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    with pytest.raises(SpecError) as err:
        check_models(load_spec(spec))  # the module names need the model: checked when the study is submitted
    assert re.search(pattern, str(err.value)), str(err.value)


@pytest.mark.slow
def test_options_add_their_terms_to_the_loss(original, monkeypatch):
    """KD, AT and KD+AT each put their own term in the training loss: on the first batch the
    loss is the base term plus exactly what the option adds (computed from the loss pieces)."""
    import compressflow.nn.training as fit_module  # OpContext.fit's fit
    from compressflow.nn.attention import attention_transfer
    from compressflow.nn.losses import hkd

    out, art = original
    first = {}
    real = fit_module.fit

    def spy(model, splits, *, loss_fn, **kw):
        def wrapped(logits, x, y):
            loss = loss_fn(logits, x, y)
            maps = [[m.detach().clone() for m in getattr(loss_fn, side, [])] for side in ("student_maps", "teacher_maps")]
            first.setdefault(kw["seed"], (loss.detach(), logits.detach(), x, y, maps))
            return loss
        return real(model, splits, loss_fn=wrapped, **kw)

    monkeypatch.setattr(fit_module, "fit", spy)
    teacher = load_checkpoint(art).eval()
    for distill in ("none", "kd", "at", "kd+at"):
        first.clear()
        prune(OpContext("p", "pruned", DATA, out), model=art, method="magnitude", sparsity=0.5, distill=distill,
              temperature=4.0, alpha=0.9, schedule=Schedule(**FAST))
        (loss, logits, x, y, (s_maps, t_maps)), = first.values()
        with torch.no_grad():
            t_logits = teacher(x)
        ce = torch.nn.functional.cross_entropy(logits, y)
        kd = hkd(logits, t_logits, y, 4.0, alpha=0.9)
        base = kd if "kd" in distill else ce
        if "at" in distill:
            at = attention_transfer(s_maps, t_maps, 1000.0)
            assert len(s_maps) == 4 and float(at) > 0 and t_maps[0].shape[2:] == x.shape[2:]  # layer1 keeps H×W
            base = base + at
        assert float(loss) == pytest.approx(float(base), rel=1e-5), distill
