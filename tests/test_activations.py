"""The Zarr activation store gives back exactly what the layers saw."""

import numpy as np
import pytest
import torch

from compressflow.activations import read_layer, store_info, write_activations
from compressflow.errors import InputError
from compressflow.nn.models import build_model
from compressflow.nn.surgery import layer_io, replaceable_layers


@pytest.fixture(scope="module")
def model_and_data():
    torch.manual_seed(0)
    net = build_model("resnet18", num_classes=10, width=0.25).eval()
    return net, {"train": torch.randn(70, 3, 16, 16), "val": torch.randn(20, 3, 16, 16)}


def test_cache_equals_recomputed_prefix(model_and_data, tmp_path):
    net, data = model_and_data
    layers = replaceable_layers(net)
    path = write_activations(net, data, layers, tmp_path / "acts.zarr", batch_size=32, samples_per_chunk=16,
                             attrs={"model_sha256": "abc"})
    info = store_info(path)
    assert info["layers"] == layers and info["splits"] == ["train", "val"] and info["model_sha256"] == "abc"
    for name in (layers[0], layers[7], layers[-1]):
        cin, cout = read_layer(path, name, "train")
        assert cin.shape[0] == 70 and cin.chunks[0] == 16  # chunked by sample
        rin, rout = layer_io(net, name, data["train"])  # the cache: false path
        np.testing.assert_allclose(cin[:], rin.numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(cout[:], rout.numpy(), rtol=1e-6, atol=1e-6)
        vin, _ = read_layer(path, name, "val")
        np.testing.assert_allclose(vin[5:9], layer_io(net, name, data["val"])[0][5:9].numpy(), rtol=1e-6, atol=1e-6)


def test_unknown_layer_split_and_store(model_and_data, tmp_path):
    net, data = model_and_data
    path = write_activations(net, {"val": data["val"]}, ["conv1"], tmp_path / "a.zarr")
    with pytest.raises(InputError, match=r"layer 'layer1' is not in .*; stored: conv1"):
        read_layer(path, "layer1", "val")
    with pytest.raises(InputError, match=r"split 'train' is not in .*; stored: val"):
        read_layer(path, "conv1", "train")
    with pytest.raises(InputError, match=r"no store at"):
        read_layer(tmp_path / "missing.zarr", "conv1", "val")


def test_failed_write_keeps_previous_store(model_and_data, tmp_path):
    net, data = model_and_data
    path = write_activations(net, {"val": data["val"]}, ["conv1"], tmp_path / "a.zarr")
    with pytest.raises(AttributeError):
        write_activations(net, {"val": data["val"]}, ["conv1", "no.such.layer"], path)
    assert read_layer(path, "conv1", "val")[0].shape[0] == 20  # the old store is intact
