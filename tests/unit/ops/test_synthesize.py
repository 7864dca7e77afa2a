"""The synthesize op in-process (the Zarr image set it writes, its record, progress and
cancellation) and distill trained on its images, with its bad inputs."""

from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from compressflow.data import load_splits
from compressflow.data.synthesized import read_image_set, write_image_set
from compressflow.engine.cancel import Cancelled
from compressflow.errors import InputError, SpecError
from compressflow.nn.training import predict
from compressflow.ops import OpContext, Schedule, load_checkpoint
from compressflow.ops import synthesize as synthesize_module
from compressflow.ops.distill import distill
from compressflow.ops.synthesize import synthesize
from compressflow.ops.train import train
from compressflow.rundir.files import artifact_digest
from compressflow.rundir.records import Artifact
from compressflow.spec import load_spec

DATA = {"dataset": "digits", "image_size": 8, "channels": 1}

SMALL = {"model": "resnet18", "width": 0.125, "schedule": Schedule(epochs=1, batch_size=128)}

TINY = {"images": 30, "iterations": 40, "batch_size": 16, "r_feature": 1.0}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    return train(OpContext("teacher-key", "teacher", DATA, out), **SMALL).artifact


@pytest.fixture(scope="module")
def synth(teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    return synthesize(OpContext("synthesize-key", "synth", DATA, out), teacher=teacher, seed=5, **TINY)


def test_store_holds_the_images_and_balanced_labels(teacher, synth):
    splits = load_splits(**DATA)
    art = synth.artifact
    assert art.kind == "zarr" and art.sha256 == artifact_digest(Path(art.path))
    root = zarr.open_group(art.path, mode="r")
    images, labels = np.asarray(root["images"][:]), np.asarray(root["labels"][:])
    assert images.shape == (30, 1, 8, 8) and images.dtype == np.float32
    assert labels.shape == (30,) and labels.dtype == np.int64
    assert np.bincount(labels, minlength=10).tolist() == [3] * 10  # balanced targets, then shuffled
    assert labels.tolist() != sorted(labels.tolist())
    # pixels stay in [0, 1] in the data's normalised space
    lo, hi = -splits.mean[0] / splits.std[0], (1 - splits.mean[0]) / splits.std[0]
    assert images.min() >= lo - 1e-5 and images.max() <= hi + 1e-5
    assert root.attrs["kind"] == "image_set" and root.attrs["sample_shape"] == [1, 8, 8]
    m = synth.metrics
    assert int(m["num_images"]) == 30 and int(m["iterations"]) == 40
    assert m["class_count"].values.tolist() == [3] * 10
    # the optimisation moved the batch statistics toward the teacher's running statistics (this
    # 1-epoch teacher's are far even from real images': about 74 for noise, 46 after, 64 for real)
    assert float(m["bn_distance_final"]) < 0.7 * float(m["bn_distance_initial"])
    assert float(m["bn_distance_final"]) < float(m["bn_distance_real"])
    # the recorded accuracy is the teacher's on the stored images against the stored labels
    net = load_checkpoint(teacher, "cpu").eval()
    with torch.no_grad():
        acc = float((net(torch.from_numpy(images)).argmax(1).numpy() == labels).mean())
    assert float(m["teacher_accuracy"]) == pytest.approx(acc)
    for term in ("loss", "ce", "r_feature", "tv_l1", "tv_l2", "l2", "competition"):
        assert np.isfinite(float(m[f"final_{term}"])), term
    assert float(m["final_competition"]) == 0.0


def test_same_seed_same_images(teacher, tmp_path):
    runs = [synthesize(OpContext(f"k{i}", "synth", DATA, tmp_path), teacher=teacher, images=6, iterations=4,
                       seed=seed) for i, seed in enumerate((5, 5, 6))]
    a, b, c = (np.asarray(zarr.open_group(r.artifact.path, mode="r")["images"][:]) for r in runs)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def _stop(asked: list) -> None:
    """A stop check that counts its calls and says the stage was cancelled."""
    from compressflow.ops import Cancelled

    asked.append(1)
    raise Cancelled("stage 'synth' was cancelled")


def test_progress_and_cancellation_at_report_boundaries(teacher, tmp_path, monkeypatch):
    events = []
    ctx = OpContext("k", "synth", DATA, tmp_path)
    monkeypatch.setattr(ctx, "progress", lambda **v: events.append(v))
    monkeypatch.setattr(synthesize_module, "PROGRESS_EVERY", 2)
    synthesize(ctx, teacher=teacher, images=4, iterations=5, batch_size=2)
    # every 2 steps and after the last of each of the two batches
    assert [(e["batch"], e["step"]) for e in events] == [(1, 2), (1, 4), (1, 5), (2, 2), (2, 4), (2, 5)]
    assert {e["of"] for e in events} == {5} and {e["of_batches"] for e in events} == {2}
    asked = []
    stop = OpContext("k2", "synth", DATA, tmp_path / "stop", stop_check=lambda: _stop(asked))
    with pytest.raises(Cancelled):
        synthesize(stop, teacher=teacher, images=4, iterations=5, batch_size=2)
    assert len(asked) == 1  # stopped at the first report, after step 2
    assert not (tmp_path / "stop" / "artifacts" / "k2.zarr").exists()


def test_distill_trains_on_the_synthetic_set_and_tests_on_real(teacher, synth, tmp_path):
    rec = distill(OpContext("kd", "kd", DATA, tmp_path), teacher=teacher, data=synth.artifact,
                  model="wrn_16_1", width=0.5, schedule=Schedule(epochs=2, batch_size=16), temperature=4)
    m = rec.metrics
    assert int(m["train_samples"]) == 2 * 30 and bool(m["synthetic"])
    splits = load_splits(**DATA)
    student = load_checkpoint(rec.artifact, "cpu")
    real = float((predict(student, splits.test).argmax(1) == splits.test.y).float().mean())
    assert float(m["accuracy"]) == pytest.approx(real)  # measured on the real test split
    plain = distill(OpContext("kd2", "kd", DATA, tmp_path), teacher=teacher, model="wrn_16_1", width=0.5,
                    schedule=Schedule(epochs=1, batch_size=128), temperature=4)
    assert int(plain.metrics["train_samples"]) == len(splits.train) and not bool(plain.metrics["synthetic"])


def _store(tmp_path, images, labels, name="set.zarr"):
    path = write_image_set(tmp_path / name, images, labels, num_classes=10)
    return Artifact("zarr", str(path), artifact_digest(path), {})


@pytest.mark.parametrize("images, labels, message", [
    (torch.zeros(4, 3, 8, 8), torch.zeros(4, dtype=torch.int64),
     r"holds images of shape \(3, 8, 8\), but the pipeline's data has \(1, 8, 8\)"),
    (torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 10, 2]), r"holds label 10, outside the pipeline's classes 0\.\.9"),
    (torch.full((2, 1, 8, 8), float("nan")), torch.zeros(2, dtype=torch.int64), "non-finite pixels"),
    (torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.int64), "holds no images"),
])
def test_distill_refuses_an_image_set_that_does_not_fit(teacher, tmp_path, images, labels, message):
    data = _store(tmp_path, images, labels)
    with pytest.raises(InputError, match=message) as err:
        distill(OpContext("kd", "kd", DATA, tmp_path), teacher=teacher, data=data, **SMALL)
    assert "\n" not in str(err.value) and str(err.value).startswith("distill.data: ")


def test_distill_refuses_a_store_that_is_not_an_image_set(teacher, tmp_path):
    path = tmp_path / "other.zarr"
    zarr.open_group(str(path), mode="w").attrs["layers"] = ["conv1"]  # e.g. an activation store
    data = Artifact("zarr", str(path), artifact_digest(path), {})
    with pytest.raises(InputError, match=r"is not an image-set store \(its attribute 'kind' is None"):
        distill(OpContext("kd", "kd", DATA, tmp_path), teacher=teacher, data=data, **SMALL)
    gone = Artifact("zarr", str(tmp_path / "gone.zarr"), "0" * 64, {})
    with pytest.raises(InputError, match="^distill.data: zarr .* is missing"):
        distill(OpContext("kd", "kd", DATA, tmp_path), teacher=teacher, data=gone, **SMALL)
    with pytest.raises(InputError, match="no store at"):
        read_image_set(tmp_path / "gone.zarr", sample_shape=(1, 8, 8), num_classes=10)


def _spec(**stages):
    return {"name": "df", "data": DATA, "stages": {
        "teacher": {"op": "train", "params": {"model": "resnet18", "width": 0.125, "epochs": 10}}, **stages}}


def test_spec_time_checks():
    kd = {"op": "distill", "needs": {"teacher": "teacher", "data": "teacher"}, "params": {"epochs": 10}}
    with pytest.raises(SpecError, match=r"^stages\.kd\.needs\.data: stage 'teacher' is a 'train' stage; distill "
                                        r"trains on the images of a 'synthesize' stage"):
        load_spec(_spec(kd=kd))
    with pytest.raises(SpecError, match=r"^stages\.synth\.params\.competition: .* needs a student"):
        load_spec(_spec(synth={"op": "synthesize", "needs": {"teacher": "teacher"}, "params": {"competition": 0.1}}))
    with pytest.raises(SpecError, match=r"^stages\.synth\.needs\.student: .* set competition > 0"):
        load_spec(_spec(synth={"op": "synthesize", "needs": {"teacher": "teacher", "student": "teacher"}}))
    ok = load_spec(_spec(synth={"op": "synthesize", "needs": {"teacher": "teacher"}},
                         kd={**kd, "needs": {"teacher": "teacher", "data": "synth"}}))
    assert ok.stages["kd"].needs == {"teacher": "teacher", "data": "synth"}


def test_adaptive_competition_with_a_student(teacher, synth, tmp_path):
    rec = synthesize(OpContext("adi", "synth", DATA, tmp_path), teacher=teacher, student=teacher,
                     competition=0.5, images=10, iterations=3, batch_size=10)
    # the student here is the teacher itself: they agree, JS ≈ 0, so 1 − JS ≈ 1
    assert float(rec.metrics["final_competition"]) == pytest.approx(1.0, abs=1e-3)
