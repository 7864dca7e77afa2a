"""Pruning, representation capture, SVCCA, CEV/SDE and PIEs as one small pipeline on the real
cluster, and the report's pruning curves and heatmaps."""

from __future__ import annotations

import numpy as np
import pytest

import compressflow
from compressflow.ops import load_checkpoint
from tests.support.specs import PRUNING

DATA = {"dataset": "digits", "image_size": 8, "channels": 1}

FAST = {"epochs": 1, "batch_size": 256}


@pytest.fixture(scope="module")
def study(client, tmp_path_factory):
    out = tmp_path_factory.mktemp("pruning")
    return out, compressflow.run(PRUNING, cluster=client, out=out, show_progress=False)


@pytest.mark.slow  # the whole pruning pipeline, end to end
def test_pruned_layers_hit_their_sparsity(study):
    _, tree = study
    assert (tree["tasks"]["status"] == "ok").all()
    pruned = tree["pruned"].to_dataset().sel(sparsity=0.5)
    layers = [str(v) for v in pruned.layer.values]
    assert "fc" not in layers and "conv1" in layers
    from compressflow.rundir import RunDir

    key = str(pruned.task_key.sel({'method': 'magnitude', 'seed': 0}).values)
    net = load_checkpoint(RunDir(study[0]).finished(key).record.artifact)
    for method in ("magnitude", "reinit", "random"):
        for name, frac in zip(layers, pruned.layer_sparsity.sel({"method": method, "seed": 0}).values):
            n = net.get_submodule(name).weight.numel()
            assert abs(frac - 0.5) * n <= 1, (method, name, frac)
    assert (net.fc.weight != 0).all()  # the classifier stays dense
    filters = pruned.layer_sparsity.sel({"method": "filters", "seed": 0})
    convs = [i for i, n in enumerate(layers) if net.get_submodule(n).weight.ndim == 4]
    for i in convs:
        out_ch = net.get_submodule(layers[i]).weight.shape[0]
        assert float(filters[i]) == pytest.approx(round(0.5 * out_ch) / out_ch, abs=1e-6)
    assert (pruned.macs_effective < pruned.macs_dense).all()


@pytest.mark.slow  # the whole pruning pipeline, end to end
def test_similarity_per_layer_and_to_itself(study):
    _, tree = study
    itself = tree["itself"].to_dataset()
    np.testing.assert_allclose(itself.svcca.values, 1.0, atol=1e-6)
    np.testing.assert_allclose(itself.cka.values, 1.0, atol=1e-6)
    cross = itself.svcca_cross.values
    np.testing.assert_allclose(np.diag(cross), 1.0, atol=1e-6)
    assert (cross[~np.eye(len(cross), dtype=bool)] < 1 - 1e-6).all()
    sim = tree["similarity"].to_dataset()
    assert sim.svcca.dims == ("method", "sparsity", "seed", "layer")
    assert ((sim.svcca > 0) & (sim.svcca < 1)).all()
    np.testing.assert_allclose(sim.svcca_distance, 1 - sim.svcca)


@pytest.mark.slow  # the whole pruning pipeline, end to end
def test_bias_and_pies(study):
    _, tree = study
    bias = tree["bias"].to_dataset()
    assert np.isfinite(bias.cev.values).all() and (bias.cev >= 0).all() and (bias.sde >= 0).all()
    assert bias.fpr_change.dims[-1] == "class"
    pies = tree["pies"].to_dataset()
    assert set(pies.pie_count.dims) == {"method", "sparsity"} and (pies.population == 2).all()
    # recount one population's PIEs from the stored predictions
    b = bias.sel({"method": "random", "sparsity": 0.5})
    preds = b.pred.values.astype(int)  # (seed, sample); stage groups hold numbers as float (NaN-fillable)
    orig = b.original_pred.values[0].astype(int)
    modal = np.array([np.bincount(col, minlength=10).argmax() for col in preds.T])
    assert int(pies.pie_count.sel({"method": "random", "sparsity": 0.5})) == int((modal != orig).sum())


@pytest.mark.slow  # the whole pruning pipeline, end to end
def test_report_draws_pruning_curves_and_heatmaps(study):
    from compressflow.report import write_report

    out, tree = study
    text = write_report(tree, out).read_text()
    assert "## pruned: accuracy vs sparsity" in text and "## similarity: representation similarity" in text
    acc = tree["pruned"]["accuracy"].sel({"method": "magnitude", "sparsity": 0.5})
    assert f"| magnitude | {100 * float(acc.mean()):.2f} ± {100 * float(acc.std(ddof=1)):.2f} |" in text
    for png in ("pruned_accuracy_vs_sparsity.png", "similarity_svcca_heatmap.png"):
        data = (out / "report" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
