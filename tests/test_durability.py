"""A crash mid-write leaves the previous state readable (checkpoints, result stores), and a
loss that becomes NaN fails the task with a clear message instead of training on garbage."""

from __future__ import annotations

import os

import pytest
import torch

import compressflow
from compressflow.data import load_splits
from compressflow.nn.models import build_model
from compressflow.nn.training import fit
from compressflow.store import atomic_write_bytes, load_checkpoint, save_checkpoint
from conftest import tiny_spec


def test_crash_while_replacing_a_file_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    atomic_write_bytes(path, b"old")

    def crash(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary file left behind


def test_crash_while_saving_a_checkpoint_keeps_the_loadable_previous(tmp_path, monkeypatch):
    net = build_model("wrn_16_1", num_classes=10, in_channels=1, width=0.5)
    art = save_checkpoint(net, tmp_path / "m.pt", model_name="wrn_16_1",
                          model_kwargs={"num_classes": 10, "in_channels": 1, "width": 0.5})
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(OSError):
        save_checkpoint(build_model("wrn_16_1", num_classes=10, in_channels=1, width=0.5), tmp_path / "m.pt",
                        model_name="wrn_16_1", model_kwargs={"num_classes": 10, "in_channels": 1, "width": 0.5})
    monkeypatch.undo()
    again = load_checkpoint(art)  # hash still matches: the old file is intact
    for a, b in zip(again.state_dict().values(), net.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_crash_while_writing_results_keeps_the_previous_store(client, tmp_path, monkeypatch):
    tree = compressflow.run(tiny_spec(), cluster=client, out=tmp_path, show_progress=False)
    import compressflow.results as results

    monkeypatch.setattr(results, "_variable_length_strings", lambda ds: (_ for _ in ()).throw(RuntimeError("crash")))
    with pytest.raises(RuntimeError, match="crash"):
        results.save_results(tree, tmp_path)
    monkeypatch.undo()
    reopened = compressflow.open_results(tmp_path)
    assert float(reopened["teacher"]["accuracy"]) == pytest.approx(float(tree["teacher"]["accuracy"]))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".results.zarr")]


def test_nan_loss_stops_training_with_a_clear_message():
    splits = load_splits("digits", image_size=8, channels=1)
    net = build_model("wrn_16_1", num_classes=10, in_channels=1, width=0.5)
    with pytest.raises(FloatingPointError, match=r"^loss became nan at epoch 1; lower lr or check the data$"):
        fit(net, splits, epochs=1, batch_size=256, lr=0.1, seed=0,
            loss_fn=lambda logits, x, y: logits.sum() * float("nan"))
