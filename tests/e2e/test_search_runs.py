"""Searches end to end on the two-worker cluster: promotions resume their trial's checkpoint,
pruned trials keep their energy, the results group has dim ``trial``, a multi-objective search
marks exactly the non-dominated trials, and a search killed half way resumes into the same
outcome as one never interrupted."""

from __future__ import annotations

import time

import numpy as np
import pytest
import xarray as xr

import compressflow

pytestmark = pytest.mark.slow

BUDGET = {"resource": "epochs", "min": 1, "max": 9, "reduction_factor": 3}


def spec(strategy="successive_halving", **search):
    block = {"strategy": strategy, "space": {"x": {"low": 0.0, "high": 1.0}, "shape": {"choices": ["a", "b", "c"]}},
             "budget": BUDGET, "trials": 9, "seed": 0, **search}
    return {"name": "search", "data": {"dataset": "digits", "image_size": 8, "channels": 1},
            "stages": {"s": {"op": "objective", "params": {"batch_size": 256}, "search": block}}}


def test_successive_halving_resumes_promotions_and_keeps_pruned_energy(client, tmp_path):
    tree = compressflow.run(spec(), cluster=client, out=tmp_path / "run", show_progress=False)
    ds = tree["s"].to_dataset()
    ledger = tree["tasks"].to_dataset()
    assert ds.sizes["trial"] == 9 and ds.sizes["rung"] == 3
    assert sorted(ds["status"].values.tolist()) == ["ok"] + ["pruned"] * 8
    assert ledger.sizes["task"] == 9 + 3 + 1 and (ledger["status"] == "ok").all()
    # each promotion resumed the trial's state: the task at 3 epochs restored 1, the one at 9 restored 3
    assert sorted(ledger["resumed_from_epoch"].values.tolist()) == [0] * 9 + [1] * 3 + [3]
    winner = int(ds["trial"][ds["status"] == "ok"][0])
    assert ds["budget"].sel(trial=winner) == 9 and ds["val_accuracy_curve"].sel(trial=winner).notnull().sum() == 9
    # a pruned trial's tasks are in the ledger with their energy, and its group energy is their sum
    assert (ledger["energy_kwh"] > 0).all()
    assert float(ds["energy_kwh"].sum()) == pytest.approx(float(ledger["energy_kwh"].sum()), rel=1e-9)
    assert ds.attrs["search_energy_kwh"] == pytest.approx(float(ledger["energy_kwh"].sum()), rel=1e-9)
    assert float(ds["search_energy_kwh"].sum()) == pytest.approx(ds.attrs["search_energy_kwh"], rel=1e-9)
    assert (ds["budget"].where(ds["status"] == "pruned") < 9).sum() == 8
    # the best of each rung went on (rung 1 -> 3: the top 3 of 9)
    first = ds["val_accuracy_by_rung"].sel(rung=1)
    promoted = set(ds["trial"].values[ds["val_accuracy_by_rung"].sel(rung=3).notnull().values])
    assert promoted == set(first.sortby(first, ascending=False)["trial"].values[:3])
    reopened = xr.open_datatree(tmp_path / "run" / "results.zarr", engine="zarr")
    assert reopened["s"].attrs["search_strategy"] == "successive_halving"
    np.testing.assert_array_equal(reopened["s"]["x"].values, ds["x"].values)
    from compressflow.report import write_report

    text = write_report(reopened, tmp_path / "run").read_text()
    assert "## Search `s`" in text and "| s | successive_halving | 9 | 1 / 8 / 0 |" in text
    assert (tmp_path / "run" / "report" / "search_s.png").stat().st_size > 10_000
    from compressflow.engine.status import status_from_rundir

    (row,) = status_from_rundir(spec(), tmp_path / "run")
    assert (row.stage, row.tasks, row.ran) == ("s", 13, 13)


def test_multi_objective_marks_exactly_the_non_dominated_trials(client, tmp_path):
    s = spec("nsga2", trials=10, objectives=["val_accuracy:max", "co2_g:min"])
    del s["stages"]["s"]["search"]["budget"]
    s["stages"]["s"]["params"]["epochs"] = 2
    ds = compressflow.run(s, cluster=client, out=tmp_path / "run", show_progress=False)["s"].to_dataset()
    acc, co2 = ds["val_accuracy"].values, ds["co2_g"].values
    dominated = [any(acc[j] >= acc[i] and co2[j] <= co2[i] and (acc[j] > acc[i] or co2[j] < co2[i])
                     for j in range(len(acc))) for i in range(len(acc))]
    np.testing.assert_array_equal(ds["pareto"].values.astype(bool), ~np.array(dominated))


def test_a_search_cancelled_half_way_resumes_into_the_same_outcome(client, tmp_path):
    reference = compressflow.run(spec(), cluster=client, out=tmp_path / "ref", show_progress=False)["s"].to_dataset()
    study = compressflow.submit(spec(), cluster=client, out=tmp_path / "run")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and sum(r.ran for r in study.status()) < 4:
        time.sleep(0.05)
    study.cancel("s")
    first = study.result()["tasks"].to_dataset()
    assert 4 <= int((first["status"] == "ok").sum()) < 13  # killed before the end
    tree = compressflow.run(spec(), cluster=client, out=tmp_path / "run", show_progress=False)
    again = tree["s"].to_dataset()
    assert int(tree["tasks"]["reused"].sum()) >= 4  # the finished trials' tasks were not run again
    for name in ("x", "shape", "status", "budget"):
        np.testing.assert_array_equal(again[name].values, reference[name].values)
    np.testing.assert_allclose(again["val_accuracy"].values, reference["val_accuracy"].values)
