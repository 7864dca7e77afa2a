"""Resumable checkpoints inside training tasks, through the task executor: an attempt killed,
failing or cancelled mid-training leaves its state, the next attempt continues after the
saved epoch (``resumed_from_epoch`` in the ledger, one ``attempts_kwh`` entry per attempt),
a finished task drops its states, and ``checkpoint_every`` (spec-level, per-stage override)
changes no task key."""

from __future__ import annotations

import contextlib

import pytest
import torch

import compressflow.engine.execute as execute
from compressflow.energy import EnergyReading
from compressflow.engine.graph import build_graph, expand
from compressflow.ops import OpContext
from compressflow.results.build import build_results
from compressflow.rundir.records import read_record
from compressflow.spec import load_spec
from tests.support.disk import fill
from tests.support.records import edit_record

EPOCHS = 4


def _spec(**top) -> dict:
    return {"name": "ckpt", "data": {"dataset": "digits", "image_size": 8, "channels": 1}, **top,
            "stages": {"teacher": {"op": "train", "params": {"model": "resnet18", "width": 0.125, "epochs": EPOCHS,
                                                             "batch_size": 128, "warmup_epochs": 0,
                                                             "milestones": [0.5]}}}}


class StepMeter:
    """The worker's meter stand-in: +1 mWh of CPU energy per epoch read, sampled into the attempt log."""

    def __init__(self) -> None:
        self.kwh, self.on_sample = 0.0, None

    @contextlib.contextmanager
    def measure(self, name, on_sample=None):
        self.kwh, self.on_sample = 0.0, on_sample
        reading = EnergyReading()
        try:
            yield reading
        finally:
            reading.cpu_kwh, reading.gpu_kwh, reading.ram_kwh = self.kwh, 0.0, 0.0
            reading.energy_kwh = self.kwh

    def energy_so_far(self) -> float:
        self.kwh += 1e-3
        if self.on_sample is not None:
            self.on_sample(self.kwh, 0.0, 0.0)
        return self.kwh


class Killed(BaseException):
    """Ends an attempt as a SIGKILL would: nothing in the task catches it, no end is logged."""


@pytest.fixture
def task(monkeypatch, tmp_path):
    """``run(stop_at=None, exc=Killed)`` → (ledger entry, epochs trained): one attempt of the
    spec's one task; ``stop_at`` raises ``exc`` in that epoch's progress report."""
    monkeypatch.setattr(execute, "current_meter", StepMeter)
    trained: list[int] = []
    stop = {}
    real = OpContext.progress

    def progress(self, **values):
        if "epoch" in values:
            trained.append(values["epoch"])
            if values["epoch"] == stop.get("at"):
                raise stop["exc"]("stopped")
        real(self, **values)

    monkeypatch.setattr(OpContext, "progress", progress)

    def run(spec=None, stop_at=None, exc=Killed, study=""):
        spec = load_spec(spec or _spec())
        (node,) = build_graph(spec, tmp_path).nodes.values()
        trained.clear()
        stop.update(at=stop_at, exc=exc)
        try:
            entry = execute.execute_task(node, spec.data.options(), str(tmp_path), study=study)
        except Killed:
            entry = None
        return entry, list(trained), node

    return run


def _states(tmp_path) -> dict[str, int]:
    return {p.name: torch.load(p, weights_only=True)["epoch"] for p in (tmp_path / "artifacts").glob("*.resume*.pt")}


def test_an_attempt_killed_in_epoch_3_is_resumed_after_epoch_2(task, tmp_path):
    gone, trained, node = task(stop_at=3)
    assert gone is None and trained == [1, 2, 3]
    assert _states(tmp_path) == {f"{node.key}.resume0.pt": 2}  # epoch 3's state was never written
    entry, trained, _ = task()
    assert entry.status == "ok", entry.error
    assert trained == [3, 4]  # epochs 1-2 are not trained again
    assert entry.resumed_from_epoch == 2 and entry.attempts == 2
    # the killed attempt's energy is its last sample (3 epochs read); the second read 2
    assert entry.attempts_kwh == pytest.approx([3e-3, 2e-3])
    assert entry.energy["energy_kwh"] == pytest.approx(5e-3)
    assert _states(tmp_path) == {}  # a finished task keeps no state
    saved = read_record(tmp_path / "records" / f"{node.key}.json", tmp_path)
    assert saved.resumed_from_epoch == 2 and saved.attempts_kwh == pytest.approx([3e-3, 2e-3])
    curve = saved.record.metrics["energy_curve_kwh"].values.tolist()
    assert curve == pytest.approx([1e-3, 2e-3, 3e-3, 4e-3]) and curve == sorted(curve)  # saved 2 mWh + this attempt's
    spec = load_spec(_spec())
    ledger = build_results(spec, build_graph(spec, tmp_path).stages, {node.key: saved})["tasks"].to_dataset()
    assert ledger["resumed_from_epoch"].dtype == "int64" and int(ledger["resumed_from_epoch"][0]) == 2
    assert [float(v) for v in str(ledger["attempts_kwh"].values[0]).split()] == pytest.approx([3e-3, 2e-3])
    assert ledger["attempts_kwh"].attrs["units"] == "kWh" and "description" in ledger["resumed_from_epoch"].attrs


def test_an_attempt_failing_after_epoch_3_keeps_that_epoch(task, tmp_path):
    failed, trained, node = task(stop_at=3, exc=RuntimeError)
    assert failed.status == "failed" and "stopped" in failed.error and trained == [1, 2, 3]
    assert _states(tmp_path) == {f"{node.key}.resume0.pt": 3}  # kept on failure
    entry, trained, _ = task()
    assert entry.status == "ok" and trained == [4] and entry.resumed_from_epoch == 3
    assert len(entry.attempts_kwh) == 2 and entry.attempts_kwh[0] == pytest.approx(3e-3)


def test_a_cancelled_task_keeps_its_state_and_resumes_from_it(task, tmp_path, monkeypatch):
    flags = {"cancel": False}

    def is_cancelled(study, stage):
        return flags["cancel"]

    import compressflow.engine.cancel as cancel

    monkeypatch.setattr(cancel, "is_cancelled", is_cancelled)
    real = OpContext.progress

    def progress(self, **values):
        real(self, **values)
        if values.get("epoch") == 2:
            flags["cancel"] = True  # the stage is cancelled while epoch 2 is reported

    monkeypatch.setattr(OpContext, "progress", progress)
    entry, trained, node = task(spec=_spec(checkpoint_every=3), study="s")  # epoch 2 is no periodic save
    assert entry.status == "cancelled" and trained == [1, 2]
    assert _states(tmp_path) == {f"{node.key}.resume0.pt": 2}
    flags["cancel"] = False
    entry, trained, _ = task(spec=_spec(checkpoint_every=3), study="s")
    assert entry.status == "ok" and trained == [3, 4] and entry.resumed_from_epoch == 2


def test_checkpoint_every_0_writes_none(task, tmp_path):
    failed, trained, _ = task(spec=_spec(checkpoint_every=0), stop_at=2, exc=RuntimeError)
    assert failed.status == "failed" and trained == [1, 2] and _states(tmp_path) == {}


def test_a_stage_overrides_the_pipelines_checkpoint_every_and_no_key_changes():
    def nodes(spec):
        return [(n.key, n.checkpoint_every) for ns in expand(load_spec(spec)).values() for n in ns]

    default = nodes(_spec())
    assert [every for _, every in default] == [1]
    assert nodes(_spec(checkpoint_every=0)) == [(default[0][0], 0)]
    override = _spec(checkpoint_every=0)
    override["stages"]["teacher"]["checkpoint_every"] = 5
    assert nodes(override) == [(default[0][0], 5)]


def test_a_signed_record_without_the_optional_fields_loads_with_their_defaults(task, tmp_path):
    entry, _, node = task()
    path = tmp_path / "records" / f"{node.key}.json"
    edit_record(path, lambda d: [d.pop(name) for name in ("resumed_from_epoch", "attempts_kwh")])
    old = read_record(path, tmp_path)
    assert old.resumed_from_epoch == 0 and old.attempts_kwh == [] and old.ok


FIRST_TASK_IMPORTS = """
import sys, tempfile
from pathlib import Path
from compressflow.data import load_splits
from compressflow.engine.execute import prepare
from compressflow.ops import OpContext, Schedule
from compressflow.ops.train import train
from compressflow.registries import OPS

prepare()  # what PreloadPlugin does on a worker as it joins
OPS.get("train")  # the registries' first lookup, as a task's own
load_splits("digits", image_size=8, channels=1)  # load_data_first, before any task
before = set(sys.modules)
with tempfile.TemporaryDirectory() as out:
    train(OpContext("k", "teacher", {"dataset": "digits", "image_size": 8, "channels": 1}, Path(out)),
          model="resnet18", width=0.125, seed=0, schedule=Schedule(epochs=1, batch_size=256))
print("\\n".join(sorted(set(sys.modules) - before)))
"""


def test_a_workers_first_training_task_imports_nothing_heavy_itself():
    """What a built-in op imports when it runs (their modules import it lazily, so that a spec
    is checked without torch) is preloaded on a worker, outside every task's clock and meter."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", FIRST_TASK_IMPORTS], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    heavy = ("torch", "torchvision", "xarray", "dask", "scipy", "sympy", "sklearn", "pandas", "compressflow")
    late = [m for m in done.stdout.split() if m.split(".")[0] in heavy and not m.startswith("torch.utils.serialization")]
    assert late == [], late


@pytest.mark.parametrize("room_for_the_log", [False, True], ids=["no-room-for-its-log", "no-room-for-its-record"])
def test_a_task_that_finds_the_disk_full_fails_with_one_line(small_disk, monkeypatch, caplog, room_for_the_log):
    """On a full disk a task fails as a task, with the one line of a full disk as its error (no
    traceback logged), and leaves no record: the next run with space runs it again."""
    monkeypatch.setattr(execute, "current_meter", StepMeter)
    spec = load_spec({"name": "full", "stages": {"w": {"op": "wait", "params": {"seconds": 0.0}}}})
    run = small_disk / "run"
    (node,) = build_graph(spec, run).nodes.values()
    log = run / "attempts" / f"{node.key}.log"
    log.parent.mkdir(parents=True)
    if room_for_the_log:  # its page on the tmpfs holds the new lines too; the record needs a page of its own
        log.write_text("earlier-worker 1.000 start 0123456789ab\n")
    fill(small_disk)
    entry = execute.execute_task(node, {}, str(run))
    written = log if not room_for_the_log else run / "records" / f"{node.key}.json"
    assert (entry.status, entry.error) == ("failed", f"no space left on '{small_disk}' while writing '{written}'; "
                                                     f"finished tasks are kept; free space and run again")
    assert not list(run.glob("records/*.json"))
    assert "Traceback" not in caplog.text and entry.error in caplog.text
