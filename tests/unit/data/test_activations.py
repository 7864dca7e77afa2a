"""The Zarr activation store gives back exactly what the layers saw."""

import re

import numpy as np
import pytest
import torch

from compressflow.data.activations import read_layer, store_info, write_activations
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


@pytest.fixture()
def store(model_and_data, tmp_path):
    net, data = model_and_data
    return write_activations(net, {"val": data["val"]}, ["conv1"], tmp_path / "a.zarr", samples_per_chunk=8)


def chunk_of(store, kind="in"):
    return store / "conv1" / "val" / kind / "c" / "0" / "0" / "0" / "0"


def unreadable(store, detail):
    return rf"^activations: {re.escape(repr(str(store)))} is not a readable activation store \({detail}.*\); re-run"


@pytest.mark.parametrize(("damage", "detail"), [
    (lambda b: b"garbage" * 5, r"array 'conv1/val/in': RuntimeError: Zstd decompression error"),
    (lambda b: b[: len(b) // 2], r"array 'conv1/val/in': RuntimeError: Zstd decompression error"),
    # one byte changed inside the compressed data: only the zstd frame checksum notices
    (lambda b: b[:-8] + bytes([b[-8] ^ 0xFF]) + b[-7:], r"array 'conv1/val/in': RuntimeError: Zstd decompression"),
])
def test_a_corrupted_chunk_names_the_store(store, damage, detail):
    chunk = chunk_of(store)
    chunk.write_bytes(damage(chunk.read_bytes()))
    cin, cout = read_layer(store, "conv1", "val")  # lazily: opening does not read chunks
    assert cout[:].shape == (20, *cout.shape[1:])  # the intact array still reads
    with pytest.raises(InputError, match=unreadable(store, detail)) as info:
        cin[:]
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("file", "text", "detail"), [
    ("zarr.json", "{not json", r"JSONDecodeError: Expecting property name"),
    ("zarr.json", '{"zarr_format": 3, "node_type": "group", "attributes": {}}', r"its attributes have no list of 'layers'"),
    ("zarr.json", '{"zarr_format": 3, "node_type": "group", "attributes": {"layers": "conv1", "splits": []}}',
     r"its attributes have no list of 'layers'"),
    ("conv1/val/in/zarr.json", '{"shape": [', r"array 'conv1/val/in': JSONDecodeError"),
])
def test_damaged_metadata_names_the_store(store, file, text, detail):
    (store / file).write_text(text)
    with pytest.raises(InputError, match=unreadable(store, detail)):
        read_layer(store, "conv1", "val")


def test_a_foreign_zarr_array_or_file_is_not_a_store(tmp_path):
    import zarr

    zarr.create_array(str(tmp_path / "arr.zarr"), shape=(3,), dtype="f4")
    with pytest.raises(InputError, match=unreadable(tmp_path / "arr.zarr", r"ContainsArrayError")):
        store_info(tmp_path / "arr.zarr")
    (tmp_path / "file.zarr").write_text("x")
    with pytest.raises(InputError, match=r"no store at .*file.zarr"):
        store_info(tmp_path / "file.zarr")


def test_a_capture_store_has_no_inputs(model_and_data, tmp_path):
    net, data = model_and_data
    path = write_activations(net, {"val": data["val"]}, ["conv1"], tmp_path / "a.zarr", kinds=("out",))
    with pytest.raises(InputError, match=r"holds no 'in' arrays \(it keeps out\)"):
        read_layer(path, "conv1", "val")


def test_svcca_refuses_a_store_that_is_not_a_capture(model_and_data, tmp_path):
    from compressflow.ops.context import OpContext
    from compressflow.ops.represent import compare_representations as svcca
    from compressflow.rundir.records import Artifact

    net, data = model_and_data
    probe = {"probe_sha256": "p", "probe_size": 20, "probe_split": "val"}
    good = write_activations(net, {"val": data["val"]}, ["conv1"], tmp_path / "good.zarr", kinds=("out",), attrs=probe)
    blockwise = write_activations(net, {"val": data["val"]}, ["conv1"], tmp_path / "blockwise.zarr")  # no probe
    ctx = OpContext("k", "similarity", out=tmp_path)
    art = {p: Artifact("zarr", str(p), "unchecked") for p in (good, blockwise)}
    same = svcca(ctx, a=art[good], b=art[good], keep=5)
    np.testing.assert_allclose(same.metrics.svcca.values, 1.0, atol=1e-5)  # a store against itself
    with pytest.raises(InputError, match=rf"^svcca.b: {re.escape(repr(str(blockwise)))} is not a capture store "
                                         r"\(its attributes have no str 'probe_sha256'\)"):
        svcca(ctx, a=art[good], b=art[blockwise])
    chunk = good / "conv1" / "val" / "out" / "c" / "0" / "0" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:100])
    with pytest.raises(InputError, match=unreadable(good, r"array 'conv1/val/out': RuntimeError: Zstd")):
        svcca(ctx, a=art[good], b=art[good])
