"""OpContext, the op's side of the contract: the one training loop (progress and the meter's
energy per epoch), artifact paths, and how the engine hands it the worker's meter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compressflow.data import load_splits
from compressflow.ops import OpContext, Schedule, curves

DATA = {"dataset": "digits", "image_size": 8, "channels": 1}

TINY = Schedule(epochs=3, batch_size=128, lr=0.05, warmup_epochs=0)


def _linear() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))


def test_fit_reads_the_meter_and_reports_every_epoch(metered_context, tmp_path):
    ctx = metered_context("k", "teacher", DATA, tmp_path)
    seen = []
    hist = ctx.fit(_linear(), TINY, seed=0, on_epoch=lambda epoch, h: seen.append((epoch, len(ctx.events))),
                   label={"round": 2})
    assert hist.energy_kwh == pytest.approx([1e-6, 2e-6, 3e-6]) and ctx.meter.reads == 3
    assert seen == [(1, 0), (2, 1), (3, 2)]  # the op's own on_epoch runs before that epoch's report
    assert [(e["round"], e["epoch"], e["of"]) for e in ctx.events] == [(2, 1, 3), (2, 2, 3), (2, 3, 3)]
    assert [e["loss"] for e in ctx.events] == pytest.approx(hist.train_loss)
    assert [e["val_accuracy"] for e in ctx.events] == pytest.approx(hist.val_accuracy)
    assert hist.val_accuracy[-1] > 0.5  # it did train (10 digit classes)


def test_fit_without_a_meter_leaves_the_energy_curve_nan(tmp_path):
    hist = OpContext("k", "teacher", DATA, tmp_path).fit(_linear(), Schedule(epochs=2, batch_size=128), seed=0)
    assert hist.energy_kwh == []
    energy = curves(hist)["energy_curve_kwh"][1]
    assert len(energy) == 2 and np.isnan(energy).all()


def test_fit_trains_on_the_splits_given(metered_context, tmp_path):
    """An op may fit on other data than the pipeline's (prune's biased subset)."""
    from compressflow.data import biased

    ctx = metered_context("k", "p", DATA, tmp_path)
    few = biased(load_splits(**DATA), (0, 1), 0.1, 0)
    hist = ctx.fit(_linear(), Schedule(epochs=1, batch_size=128), seed=0, splits=few)
    assert hist.train_samples == len(few.train) < len(ctx.splits().train)


def test_artifact_path_is_under_the_run_and_named_by_the_key(tmp_path):
    path = OpContext("train-abc", "teacher", DATA, tmp_path).artifact_path(".pt")
    assert path == tmp_path / "artifacts" / "train-abc.pt" and path.parent.is_dir()


def test_the_engine_hands_the_op_the_workers_meter(monkeypatch, tmp_path):
    """execute_task builds the context with the meter that measures the task, so an op never
    looks the meter up itself."""
    import contextlib
    import functools

    import compressflow.engine.execute as execute
    from compressflow.energy import EnergyReading
    from compressflow.engine.graph import build_graph
    from compressflow.registries import OPS
    from compressflow.spec import load_spec

    got = {}

    class Meter:
        def measure(self, name, on_sample=None):
            return contextlib.nullcontext(EnergyReading())

    meter = Meter()
    real = OPS.get("wait")

    @functools.wraps(real)  # stands in for the built-in op: its parameters, keyed by its version
    def spy(ctx, **kw):
        got["meter"] = ctx.meter
        return real(ctx, **kw)

    monkeypatch.setattr(execute, "current_meter", lambda: meter)
    monkeypatch.setitem(OPS._items, "wait", spy)
    spec = load_spec({"name": "m", "stages": {"w": {"op": "wait", "params": {"seconds": 0.0}}}})
    (node,) = build_graph(spec, tmp_path).nodes.values()
    task = execute.execute_task(node, spec.data.options(), str(tmp_path))
    assert task.status == "ok", task.error
    assert got["meter"] is meter
