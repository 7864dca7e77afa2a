"""End to end on a real two-worker LocalCluster: schema, energy, reuse, quickstart accuracy."""

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import compressflow
from compressflow.energy import carbon_intensity
from tests.support import tiny_spec

LEDGER_VARS = {"stage", "op", "worker", "status", "start", "end", "duration_s", "energy_kwh", "cpu_kwh", "gpu_kwh",
               "ram_kwh", "energy_lost_kwh", "facility_kwh", "co2_g"}

STAGE_VARS = {"accuracy", "val_accuracy", "energy_kwh", "facility_kwh", "co2_g", "train_flops", "params", "macs"}


@pytest.fixture(scope="module")
def tiny_run(client, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    spec = tiny_spec(sweep={"seed": [0, 1]})
    spec["energy"] = {"country": "FRA", "pue": 1.5}
    tree = compressflow.run(spec, cluster=client, out=out, show_progress=False)
    return spec, out, tree


def test_results_schema_round_trip_with_plain_xarray(tiny_run):
    _, out, tree = tiny_run
    with xr.open_datatree(Path(out) / "results.zarr", engine="zarr") as disk:
        assert set(disk.children) == {"tasks", "teacher", "test"}
        ledger = disk["tasks"].to_dataset()
        assert LEDGER_VARS <= set(ledger.data_vars)
        assert ledger.sizes["task"] == 4
        assert ledger["energy_kwh"].attrs["units"] == "kWh" and ledger["co2_g"].attrs["units"] == "g CO2eq"
        for stage in ("teacher", "test"):
            group = disk[stage].to_dataset()
            assert STAGE_VARS <= set(group.data_vars), stage
            assert group["accuracy"].dims == ("seed",) and list(group.seed.values) == [0, 1]
            assert group["accuracy"].attrs["units"] == "1"
        xr.testing.assert_identical(disk["teacher"].to_dataset().load(), tree["teacher"].to_dataset())
        assert disk["test"]["confusion"].dims == ("seed", "true_class", "pred_class")
        assert int(disk["test"]["confusion"].sum()) == 2 * 360  # both seeds score all 360 test images


def test_every_task_has_energy_and_co2(tiny_run):
    _, _, tree = tiny_run
    ledger = tree["tasks"].to_dataset()
    assert (ledger.status == "ok").all()
    assert (ledger.energy_kwh > 0).all() and (ledger.co2_g > 0).all()
    np.testing.assert_allclose(ledger.energy_kwh, ledger.cpu_kwh + ledger.gpu_kwh + ledger.ram_kwh, rtol=1e-9)
    np.testing.assert_allclose(ledger.co2_g, ledger.energy_kwh * 1.5 * carbon_intensity("FRA"), rtol=1e-9)
    # STKD's kWh include PUE (its Eq. 4); ours are IT energy, and facility_kwh is the PUE-scaled figure
    np.testing.assert_allclose(ledger.facility_kwh, ledger.energy_kwh * 1.5, rtol=1e-12)
    assert ledger.facility_kwh.attrs["units"] == "kWh" and "includes PUE" in ledger.facility_kwh.attrs["description"]
    assert "no PUE" in ledger.energy_kwh.attrs["description"]
    assert (ledger.energy_lost_kwh == 0).all()  # no attempt was lost
    for stage in ("teacher", "test"):
        group = tree[stage].to_dataset()
        np.testing.assert_allclose(group.facility_kwh, group.energy_kwh * 1.5, rtol=1e-12)
        assert group.facility_kwh.attrs["units"] == "kWh"
    assert all("cpu=" in m for m in ledger.energy_method.values)
    # the runner told each worker how many workers share its host (2), so host-wide RAM power is split
    assert all("n_workers_on_host=2" in m for m in ledger.energy_method.values)
    assert (ledger.end > ledger.start).all()


def test_tasks_ran_on_both_workers_and_train_flops(client, tiny_run):
    _, _, tree = tiny_run
    workers = set(client.scheduler_info()["workers"])
    assert set(tree["tasks"]["worker"].values) <= workers
    teacher = tree["teacher"].to_dataset()
    # 1 epoch over the train split: forward+backward ≈ 3 × forward FLOPs per sample
    per_sample = teacher.train_flops / teacher.train_samples
    assert ((per_sample > 2.5 * 2 * teacher.macs) & (per_sample < 3.5 * 2 * teacher.macs)).all()


def test_rerun_reuses_finished_tasks(client, tiny_run):
    spec, out, tree = tiny_run
    again = compressflow.run(spec, cluster=client, out=out, show_progress=False)
    # reused records keep their original start times: nothing was recomputed
    np.testing.assert_array_equal(again["tasks"]["start"].values, tree["tasks"]["start"].values)
    xr.testing.assert_identical(again["teacher"].to_dataset(), tree["teacher"].to_dataset())
    reopened = compressflow.open_results(out)
    assert list(reopened["tasks"].task.values) == list(tree["tasks"].task.values)


def test_energy_is_metered_per_epoch(client, tmp_path):
    tree = compressflow.run(tiny_spec(params={"model": "resnet18", "width": 0.125, "epochs": 3, "batch_size": 128}),
                            cluster=client, out=tmp_path, show_progress=False)
    teacher = tree["teacher"].to_dataset()
    curve, elapsed = teacher.energy_curve_kwh.values, teacher.elapsed_curve_s.values
    assert curve.shape == (3,) and np.isfinite(curve).all() and (curve > 0).all()
    assert (np.diff(curve) > 0).all() and (np.diff(elapsed) > 0).all()
    total = float(tree["tasks"]["energy_kwh"].sel(task=str(teacher.task_key.values)))
    assert curve[-1] <= total * (1 + 1e-9)  # read inside the task's own meter window
    assert teacher.energy_curve_kwh.attrs["units"].startswith("kWh (cumulative")


@pytest.mark.slow
def test_renamed_sweep_axes_are_the_result_dimensions(client, tmp_path):
    spec = tiny_spec(sweep={"model": {"as": "teacher_model", "values": ["resnet18", "mobilenet_v2"]}})
    spec["stages"]["teacher"]["params"] = {"width": 0.125, "epochs": 1, "batch_size": 128}
    spec["stages"]["test"]["sweep"] = {"split": {"as": "subset", "values": ["val", "test"]}}
    tree = compressflow.run(spec, cluster=client, out=tmp_path, show_progress=False)
    test = tree["test"].to_dataset()
    assert dict(test.sizes)["teacher_model"] == 2 and dict(test.sizes)["subset"] == 2
    assert sorted(test["teacher_model"].values) == ["mobilenet_v2", "resnet18"]
    teacher = tree["teacher"].to_dataset()
    assert teacher["params"].sel(teacher_model="resnet18") != teacher["params"].sel(teacher_model="mobilenet_v2")
    with xr.open_datatree(Path(tmp_path) / "results.zarr", engine="zarr") as disk:
        assert set(disk["test"].to_dataset().dims) >= {"teacher_model", "subset"}
