"""OpContext.fit's resumable states: one file per fit of the task, written atomically, read
with ``weights_only``; a state that does not fit the run, or cannot be read, is ignored with a
warning and training starts from the beginning."""

from __future__ import annotations

import logging

import torch

from compressflow.ops import OpContext, Schedule

DATA = {"dataset": "digits", "image_size": 8, "channels": 1}

TINY = Schedule(epochs=3, batch_size=128, lr=0.05, warmup_epochs=0)


def _linear() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))


def _ctx(metered_context, tmp_path, every: int = 1) -> OpContext:
    ctx = metered_context("train-k", "teacher", DATA, tmp_path)
    ctx.checkpoint_every = every
    return ctx


def _states(tmp_path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "artifacts").glob("*resume*"))


def test_each_fit_of_a_task_keeps_its_own_state_and_a_rerun_restores_them(metered_context, tmp_path):
    first = _ctx(metered_context, tmp_path)
    a, b = _linear(), _linear()
    ha = first.fit(a, TINY, seed=0)
    first.fit(b, TINY.model_copy(update={"epochs": 2}), seed=1)
    assert _states(tmp_path) == ["train-k.resume0.pt", "train-k.resume1.pt"]  # no temporary file left
    state = torch.load(tmp_path / "artifacts" / "train-k.resume1.pt", weights_only=True)
    assert state["epoch"] == 2 and state["config"]["seed"] == 1
    again = _ctx(metered_context, tmp_path)  # the task's next attempt
    a2, b2 = _linear(), _linear()
    h2 = again.fit(a2, TINY, seed=0)
    again.fit(b2, TINY.model_copy(update={"epochs": 2}), seed=1)
    assert again.events == [] and again.resumed_from_epoch == 3 + 2  # nothing trained again
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), a2.state_dict().values()))
    assert all(torch.equal(x, y) for x, y in zip(b.state_dict().values(), b2.state_dict().values()))
    assert h2.val_accuracy == ha.val_accuracy and h2.energy_kwh == ha.energy_kwh


def test_a_state_of_another_schedule_is_ignored_with_a_warning(metered_context, tmp_path, caplog):
    _ctx(metered_context, tmp_path).fit(_linear(), TINY, seed=0)
    ctx = _ctx(metered_context, tmp_path)
    with caplog.at_level(logging.WARNING, logger="compressflow.stage"):
        hist = ctx.fit(_linear(), TINY.model_copy(update={"epochs": 4}), seed=0)
    assert len(hist.val_accuracy) == 4 and [e["epoch"] for e in ctx.events] == [1, 2, 3, 4]
    assert ctx.resumed_from_epoch == 0
    assert "is not resumed (it was saved with epochs=3, this run has epochs=4); training from the start" in caplog.text
    state = torch.load(tmp_path / "artifacts" / "train-k.resume0.pt", weights_only=True)
    assert state["epoch"] == 4  # replaced by this run's own


def test_a_state_of_another_model_is_ignored_with_a_warning(metered_context, tmp_path, caplog):
    _ctx(metered_context, tmp_path).fit(_linear(), TINY, seed=0)
    torch.manual_seed(0)
    other = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    ctx = _ctx(metered_context, tmp_path)
    with caplog.at_level(logging.WARNING, logger="compressflow.stage"):
        ctx.fit(other, TINY, seed=0)
    assert len(ctx.events) == 3 and "its model has other parameters" in caplog.text


def test_a_torn_state_is_ignored_with_a_warning(metered_context, tmp_path, caplog):
    path = tmp_path / "artifacts" / "train-k.resume0.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 torn")
    ctx = _ctx(metered_context, tmp_path)
    with caplog.at_level(logging.WARNING, logger="compressflow.stage"):
        hist = ctx.fit(_linear(), TINY, seed=0)
    assert len(hist.val_accuracy) == 3 and ctx.resumed_from_epoch == 0
    assert f"training state {path} cannot be read" in caplog.text and "training from the start" in caplog.text


class _Payload:
    ran = False

    def __reduce__(self):
        return (_Payload._run, ())

    @staticmethod
    def _run():
        _Payload.ran = True
        return "x"


def test_a_state_holding_pickled_objects_is_never_unpickled(metered_context, tmp_path, caplog):
    path = tmp_path / "artifacts" / "train-k.resume0.pt"
    path.parent.mkdir(parents=True)
    torch.save({"format": 1, "epoch": 1, "payload": _Payload()}, path)
    ctx = _ctx(metered_context, tmp_path)
    with caplog.at_level(logging.WARNING, logger="compressflow.stage"):
        ctx.fit(_linear(), TINY, seed=0)
    assert not _Payload.ran and "cannot be read" in caplog.text and len(ctx.events) == 3


def test_checkpoint_every_0_writes_and_reads_none(metered_context, tmp_path):
    ctx = _ctx(metered_context, tmp_path, every=0)
    ctx.fit(_linear(), TINY, seed=0)
    assert _states(tmp_path) == []
    # and an op called by hand (the default context) leaves none behind either
    OpContext("train-k", "teacher", DATA, tmp_path).fit(_linear(), TINY, seed=0)
    assert _states(tmp_path) == []


def test_a_state_that_cannot_be_written_does_not_stop_the_training(metered_context, tmp_path, monkeypatch, caplog):
    import compressflow.ops.context as context

    def full(path, data):
        raise OSError("No space left on device")

    monkeypatch.setattr(context, "atomic_write_bytes", full)
    ctx = _ctx(metered_context, tmp_path)
    with caplog.at_level(logging.WARNING, logger="compressflow.stage"):
        hist = ctx.fit(_linear(), TINY, seed=0)
    assert len(hist.val_accuracy) == 3 and "not written (No space left on device); the task goes on" in caplog.text
    assert _states(tmp_path) == []
