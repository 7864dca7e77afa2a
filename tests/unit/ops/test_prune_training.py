"""What a prune task trains: fresh initialisations that never replay the original's, each
option (KD, AT, biased data) changing the training, and the AGP schedule's timing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

# every op trains through OpContext.fit, which calls the fit of compressflow.nn.training: the spies go there
import compressflow.nn.training as fit_module
from compressflow.nn.pruning import prunable_layers
from compressflow.ops import OpContext, Schedule, load_checkpoint
from compressflow.ops.prune import derived_seed, prune
from compressflow.ops.train import train

DATA = {"dataset": "digits", "image_size": 8, "channels": 1}

ONE = Schedule(epochs=1, batch_size=256)


class _Stop(Exception):
    """Raised by the spy to stop a task once its model is about to be trained."""


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    out = tmp_path_factory.mktemp("orig")
    art = train(OpContext("o", "original", DATA, out), model="resnet18", width=0.125, schedule=ONE).artifact
    return out, art


def _starting_point(monkeypatch, module, call):
    """The state dict of the model ``call`` is about to train and the seed its batch order
    gets, read by a spy on ``module.fit`` (which stops the task there)."""
    seen = {}

    def spy(model, splits, *, seed, **kw):
        seen["state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        seen["seed"] = seed
        raise _Stop

    with monkeypatch.context() as m:
        m.setattr(module, "fit", spy)
        with pytest.raises(_Stop):
            call()
    return seen["state"], seen["seed"]


def _weights(state: dict) -> dict:
    """The randomly initialised weights (conv and linear; BatchNorm starts at 1 and 0) by
    layer: ``weight_orig`` where a pruning mask is applied."""
    out = {k.removesuffix("_orig"): v for k, v in state.items() if k.endswith(".weight_orig")}
    out.update({k: v for k, v in state.items() if k.endswith(".weight")})
    return {k: v for k, v in out.items() if v.ndim >= 2}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reinit_and_random_never_start_from_the_originals_initialisation(monkeypatch, original, seed, tmp_path):
    out, art = original
    # the original's initial model and batch order exactly as `train` builds them for this seed
    orig, orig_seed = _starting_point(monkeypatch, fit_module, lambda: train(
        OpContext("t", "t", DATA, tmp_path), model="resnet18", width=0.125, schedule=ONE, seed=seed))
    assert orig_seed == seed
    starts = {}
    for method in ("reinit", "random"):
        state, data_seed = _starting_point(monkeypatch, fit_module, lambda: prune(
            OpContext("p", "p", DATA, out), model=art, method=method, sparsity=0.5, schedule=ONE, seed=seed))
        w = _weights(state)
        assert len(w) == 21 and set(w) == set(_weights(orig))  # 20 convs and the classifier
        for name, value in w.items():
            assert not torch.equal(value, _weights(orig)[name]), (method, seed, name)
        assert data_seed != orig_seed and data_seed == derived_seed(method, seed, "data")
        starts[method] = (w, data_seed)
    # and the two methods differ from each other as well
    assert not torch.equal(starts["reinit"][0]["conv1.weight"], starts["random"][0]["conv1.weight"])
    assert starts["reinit"][1] != starts["random"][1]


def test_a_reinitialised_run_is_reproducible(original, tmp_path):
    out, art = original
    a, b = (load_checkpoint(prune(OpContext(f"p{i}", "p", DATA, tmp_path / str(i)), model=art, method="reinit",
                                  sparsity=0.5, schedule=ONE, seed=3).artifact).state_dict() for i in range(2))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_derived_seeds_are_stable_and_distinct():
    import hashlib

    # written out independently: sha256 of the canonical string, first 8 bytes, top bit cleared
    expected = int.from_bytes(hashlib.sha256(b"compressflow.prune/reinit/init/0").digest()[:8], "big") >> 1
    assert derived_seed("reinit", 0, "init") == expected
    seeds = {derived_seed(m, s, p) for m in ("reinit", "random", "magnitude", "filters") for s in range(3)
             for p in ("init", "data", "mask")}
    assert len(seeds) == 36 and all(0 <= s < 2**63 for s in seeds) and not seeds & {0, 1, 2}


def test_agp_prunes_at_the_scheduled_epochs(monkeypatch, original, tmp_path):
    """``filters`` with 4 AGP steps over 8 epochs: the plan puts the steps at epochs
    round(k · 4 / 3) = 0 (before training), 1, 3 and 4 (mid-training), at the cubic
    levels s_k = s_f + (s_i − s_f)(1 − k/3)³ from 10 % to the target; the model's filter
    sparsity during each epoch must be exactly the planned level, and the target from
    mid-training on."""
    out, art = original
    target, steps, epochs = 0.5, 4, 8
    levels = [target + (0.1 - target) * (1 - k / 3) ** 3 for k in range(steps)]  # 0.1, 0.3815, 0.4852, 0.5
    plan = {0: levels[0], 1: levels[1], 3: levels[2], 4: levels[3]}
    in_force = {}  # epoch → filter sparsity of a layer while that epoch trains
    real = fit_module.fit

    def spy(model, splits, *, on_epoch, epochs, **kw):
        def during(epoch_done, hist):
            on_epoch(epoch_done, hist)  # the AGP step (if any) for the epochs after this one
            in_force[epoch_done + 1] = _filter_sparsity(model)
        in_force[1] = _filter_sparsity(model)
        return real(model, splits, on_epoch=during, epochs=epochs, **kw)

    monkeypatch.setattr(fit_module, "fit", spy)
    rec = prune(OpContext("agp", "pruned", DATA, tmp_path), model=art, method="filters", sparsity=target,
                agp_steps=steps, schedule=Schedule(epochs=epochs, batch_size=512))
    current = levels[0]
    for epoch in range(1, epochs + 1):
        if epoch - 1 in plan:  # a step at the end of epoch e is in force from epoch e + 1 on
            current = plan[epoch - 1]
        for name, (zero, filters) in in_force[epoch].items():
            assert zero == round(current * filters), (epoch, name, zero, filters, current)
    assert all(zero == round(target * n) for zero, n in in_force[5].values())  # the target at mid-training
    sizes = {k: v[1] for k, v in in_force[1].items()}
    assert any(round(a * n) != round(b * n) for n in sizes.values() for a, b in zip(levels, levels[1:]))
    assert float(rec.metrics.sparsity) == pytest.approx(
        np.average([round(target * n) / n for n in sizes.values()], weights=_conv_sizes(art)), abs=1e-6)


def _filter_sparsity(model) -> dict[str, tuple[int, int]]:
    """(zero output filters, filters) of every prunable conv, from the weights in force."""
    out = {}
    for name in prunable_layers(model):
        m = model.get_submodule(name)
        w = (m.weight_orig * m.weight_mask if hasattr(m, "weight_orig") else m.weight).detach()
        if w.ndim == 4:
            out[name] = (int((w.flatten(1).abs().sum(1) == 0).sum()), w.shape[0])
    return out


def _conv_sizes(art) -> list[int]:
    net = load_checkpoint(art)
    return [net.get_submodule(n).weight.numel() for n in prunable_layers(net) if net.get_submodule(n).weight.ndim == 4]
