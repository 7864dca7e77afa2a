"""Best-τ selection is on validation accuracy, never test."""

import numpy as np
import pytest
import xarray as xr

from compressflow.results.kd_comparison import select_temperature


def test_selection_uses_val_not_test():
    temps = [2, 4, 8]
    # val prefers τ=8 on average over seeds; test would prefer τ=2
    val = np.array([[0.80, 0.82], [0.85, 0.83], [0.90, 0.91]])
    test = np.array([[0.99, 0.98], [0.50, 0.50], [0.70, 0.72]])
    ds = xr.Dataset({"val_accuracy": (("temperature", "seed"), val), "accuracy": (("temperature", "seed"), test)},
                    coords={"temperature": temps, "seed": [0, 1]})
    best, acc = select_temperature(ds)
    assert best == 8
    assert acc.values.tolist() == [0.70, 0.72]


def test_selection_averages_over_seeds_and_skips_failed_runs():
    val = np.array([[0.95, np.nan], [0.90, 0.92]])  # τ=2: one seed failed; mean of the rest 0.95
    test = np.array([[0.9, np.nan], [0.8, 0.8]])
    ds = xr.Dataset({"val_accuracy": (("temperature", "seed"), val), "accuracy": (("temperature", "seed"), test)},
                    coords={"temperature": [2, 4], "seed": [0, 1]})
    assert select_temperature(ds)[0] == 2


def _spec():
    from compressflow import load_spec

    student = {"model": "mobilenet_v2", "width": 0.25, "epochs": 10}
    return load_spec({"name": "t", "stages": {
        "teacher": {"op": "train", "params": {"epochs": 10}},
        "grid": {"op": "distill", "needs": {"teacher": "teacher"}, "params": student,
                 "sweep": {"temperature": [2, 4, 8]}},
        "stoch": {"op": "distill", "needs": {"teacher": "teacher"},
                  "params": {**student, "temperature": {"stochastic": [2, 8]}}}}})


def _groups(val, test, stoch_test):
    costs = {"train_flops": 1e9, "energy_kwh": 1e-4, "co2_g": 0.05, "duration_s": 10.0}
    grid = xr.Dataset({"val_accuracy": ("temperature", val), "accuracy": ("temperature", test),
                       **{k: ("temperature", [v] * 3) for k, v in costs.items()}}, coords={"temperature": [2, 4, 8]})
    stoch = xr.Dataset({"val_accuracy": stoch_test, "accuracy": stoch_test, **costs})
    return {"/teacher": xr.Dataset(), "/grid": grid, "/stoch": stoch}


def test_one_seed_has_no_std_and_ties_are_flagged():
    from compressflow.report import kd_notes, kd_table
    from compressflow.results.kd_comparison import kd_comparison, tied_temperatures

    # the 2-epoch case of issue 12: every student at chance, every τ tied on validation
    groups = _groups([0.1, 0.1, 0.1], [0.1, 0.1, 0.1], 0.1)
    assert tied_temperatures(groups["/grid"]) == [2.0, 4.0, 8.0]
    comp = kd_comparison(_spec(), groups)["/kd_comparison"]
    assert np.isnan(comp.accuracy_std.values).all() and (comp.n_runs == 1).all()  # undefined, not 0
    assert comp.tied.values.tolist() == [3] and str(comp.tied_temperatures.values[0]) == "2, 4, 8"
    table = kd_table(comp)
    assert "| hkd | tuned | 10.00 ± — % | 2 (tie: 2, 4, 8) |" in table and "± 0.00" not in table
    notes = kd_notes(comp)
    assert notes[0].startswith("Note: for hkd, τ = 2, 4, 8 tie on validation accuracy") and "—" in notes[1]
    # a clear winner: no tie, no note about ties
    comp = kd_comparison(_spec(), _groups([0.8, 0.9, 0.85], [0.7, 0.95, 0.9], 0.9))["/kd_comparison"]
    assert comp.tied.values.tolist() == [1] and comp.best_temperature.values.tolist() == [4]
    assert "| hkd | tuned | 95.00 ± — % | 4 |" in kd_table(comp)
    assert not any("tie" in n for n in kd_notes(comp))


def test_std_over_seeds_is_the_sample_std():
    from compressflow.results.kd_comparison import _std

    assert _std(xr.DataArray([0.90, 0.94])) == np.std([0.90, 0.94], ddof=1)
    assert np.isnan(_std(xr.DataArray([0.90, np.nan])))  # one finite run left


def test_a_search_over_tau_gets_its_own_row_best_finished_trial_by_val_and_all_its_cost():
    """Per seed the search's best *finished* trial by validation accuracy (a pruned trial with
    a higher value at its rung never wins), test accuracy mean ± std over seeds, and the cost of
    every trial, pruned ones included, relative to the stochastic run's."""
    from compressflow import load_spec
    from compressflow.report import kd_table
    from compressflow.results.kd_comparison import kd_comparison

    student = {"model": "mobilenet_v2", "width": 0.25}
    spec = load_spec({"name": "t", "stages": {
        "teacher": {"op": "train", "params": {"epochs": 10}},
        "grid": {"op": "distill", "needs": {"teacher": "teacher"}, "params": {**student, "epochs": 10},
                 "sweep": {"temperature": [2, 4, 8], "seed": [0, 1]}},
        "stoch": {"op": "distill", "needs": {"teacher": "teacher"}, "sweep": {"seed": [0, 1]},
                  "params": {**student, "epochs": 10, "temperature": {"stochastic": [2, 8]}}},
        "sh": {"op": "distill", "needs": {"teacher": "teacher"}, "params": student, "sweep": {"seed": [0, 1]},
               "search": {"strategy": "successive_halving", "space": {"temperature": {"choices": [2, 4, 8]}},
                          "budget": {"min": 2, "max": 10}, "trials": 3}}}})
    cost = {"train_flops": 1e9, "energy_kwh": 1e-4, "co2_g": 0.05, "duration_s": 10.0}
    grid = xr.Dataset({"val_accuracy": (("temperature", "seed"), np.full((3, 2), 0.8)),
                       "accuracy": (("temperature", "seed"), np.full((3, 2), 0.7)),
                       **{k: (("temperature", "seed"), np.full((3, 2), v)) for k, v in cost.items()}},
                      coords={"temperature": [2, 4, 8], "seed": [0, 1]})
    stoch = xr.Dataset({"val_accuracy": ("seed", [0.8, 0.8]), "accuracy": ("seed", [0.75, 0.75]),
                        **{k: ("seed", [v, v]) for k, v in cost.items()}}, coords={"seed": [0, 1]})
    status = [["pruned", "ok", "pruned"], ["ok", "pruned", "failed"]]
    val = [[0.99, 0.90, 0.50], [0.85, 0.95, np.nan]]  # seed 0: the pruned 0.99 must not win
    test = [[0.10, 0.80, 0.20], [0.90, 0.30, np.nan]]
    energy = [[1e-5, 5e-5, 1e-5], [5e-5, 1e-5, 2e-6]]
    sh = xr.Dataset({"status": (("seed", "trial"), status), "val_accuracy": (("seed", "trial"), val),
                     "accuracy": (("seed", "trial"), test), "energy_kwh": (("seed", "trial"), energy),
                     **{k: (("seed", "trial"), np.ones((2, 3))) for k in ("train_flops", "co2_g", "duration_s")}},
                    coords={"seed": [0, 1], "trial": [0, 1, 2]})
    comp = kd_comparison(spec, {"/teacher": xr.Dataset(), "/grid": grid, "/stoch": stoch, "/sh": sh})["/kd_comparison"]
    assert comp.method.values.tolist() == ["tuned", "stochastic", "successive_halving"]
    row = comp.sel({"loss": "hkd", "method": "successive_halving"})
    assert float(row.accuracy_mean) == np.mean([0.80, 0.90]) and float(row.accuracy_std) == np.std([0.8, 0.9], ddof=1)
    assert float(row.energy_kwh) == sum(map(sum, energy))  # pruned and failed trials' energy included
    assert float(row.energy_vs_stochastic) == sum(map(sum, energy)) / 2e-4
    assert float(comp.sel({"loss": "hkd", "method": "tuned"}).energy_vs_stochastic) == 3.0
    assert "| hkd | successive_halving | 85.00 ± 7.07 % | searched per seed | 2 |" in kd_table(comp)


def test_a_search_row_costs_only_its_own_losses_searches():
    """Beside a ``loss`` sweep, each loss's search row pays for that loss's searches (the
    per-search ``search_energy_kwh``, each shared task once), not the whole stage's."""
    from compressflow import load_spec
    from compressflow.results.kd_comparison import kd_comparison

    student = {"model": "mobilenet_v2", "width": 0.25}
    sweep = {"loss": ["hkd", "dml"], "seed": [0, 1]}
    spec = load_spec({"name": "t", "stages": {
        "teacher": {"op": "train", "params": {"epochs": 10}},
        "grid": {"op": "distill", "needs": {"teacher": "teacher"}, "params": {**student, "epochs": 10},
                 "sweep": {**sweep, "temperature": [2, 4]}},
        "stoch": {"op": "distill", "needs": {"teacher": "teacher"}, "sweep": sweep,
                  "params": {**student, "epochs": 10, "temperature": {"stochastic": [2, 8]}}},
        "sh": {"op": "distill", "needs": {"teacher": "teacher"}, "params": student, "sweep": sweep,
               "search": {"strategy": "successive_halving", "sampler": "grid",
                          "space": {"temperature": {"choices": [2, 4]}}, "budget": {"min": 2, "max": 10}}}}})
    dims, coords = ("loss", "seed"), {"loss": ["hkd", "dml"], "seed": [0, 1]}
    ones = lambda *extra: np.ones((2, 2, *extra))  # noqa: E731
    base = {"val_accuracy": 0.8, "accuracy": 0.7, "train_flops": 1e9, "co2_g": 0.05, "duration_s": 10.0}
    grid = xr.Dataset({k: ((*dims, "temperature"), ones(2) * v) for k, v in {**base, "energy_kwh": 1e-4}.items()},
                      coords={**coords, "temperature": [2, 4]})
    stoch = xr.Dataset({k: (dims, ones() * v) for k, v in {**base, "energy_kwh": 1e-4}.items()}, coords=coords)
    per_search = np.array([[1e-4, 2e-4], [4e-4, 8e-4]])  # hkd's two searches, dml's two
    sh = xr.Dataset({"status": ((*dims, "trial"), np.full((2, 2, 2), "ok")),
                     **{k: ((*dims, "trial"), ones(2) * v) for k, v in {**base, "energy_kwh": 9.0}.items()},
                     **{f"search_{k}": (dims, per_search * s) for k, s in
                        (("energy_kwh", 1), ("co2_g", 1e3), ("duration_s", 1e4))}},
                    coords={**coords, "trial": [0, 1]}, attrs={"search_energy_kwh": float(per_search.sum())})
    # dml seed 1's two trials proposed one configuration: one task, its FLOPs once
    sh["task_key"] = ((*dims, "trial"), np.array([[["a", "b"], ["c", "d"]], [["e", "f"], ["g", "g"]]]))
    comp = kd_comparison(spec, {"/teacher": xr.Dataset(), "/grid": grid, "/stoch": stoch, "/sh": sh})["/kd_comparison"]
    gflops = comp["gflops"].sel({"method": "successive_halving"})
    assert float(gflops.sel(loss="hkd")) == pytest.approx(4.0) and float(gflops.sel(loss="dml")) == pytest.approx(3.0)
    kwh = comp["energy_kwh"].sel({"method": "successive_halving"})  # (sel's own method= is another thing)
    assert float(kwh.sel(loss="hkd")) == pytest.approx(3e-4) and float(kwh.sel(loss="dml")) == pytest.approx(12e-4)
    assert float(comp["energy_vs_stochastic"].sel({"method": "successive_halving", "loss": "dml"})) == pytest.approx(6.0)


def test_teacher_student_pairs_are_compared_one_by_one_not_averaged():
    """STKD Table 7: with renamed model axes on both stages, τ is tuned and costs are totalled
    per teacher × student pair; averaging over pairs would pick one τ for all of them."""
    from compressflow import load_spec
    from compressflow.report import kd_table
    from compressflow.results.kd_comparison import kd_comparison

    spec = load_spec({"name": "t", "stages": {
        "teacher": {"op": "train", "params": {"epochs": 10},
                    "sweep": {"model": {"as": "teacher_model", "values": ["resnet18", "wrn_40_2"]}}},
        "grid": {"op": "distill", "needs": {"teacher": "teacher"}, "params": {"epochs": 10},
                 "sweep": {"model": {"as": "student_model", "values": ["mobilenet_v2", "wrn_16_1"]},
                           "temperature": [2, 8], "seed": [0, 1]}},
        "stoch": {"op": "distill", "needs": {"teacher": "teacher"},
                  "params": {"epochs": 10, "temperature": {"stochastic": [2, 8]}},
                  "sweep": {"model": {"as": "student_model", "values": ["mobilenet_v2", "wrn_16_1"]},
                            "seed": [0, 1]}}}})
    teachers, students = ["resnet18", "wrn_40_2"], ["mobilenet_v2", "wrn_16_1"]
    # val prefers τ = 2 only for (wrn_40_2, wrn_16_1); test accuracy encodes the pair
    val = np.full((2, 2, 2, 2), 0.5)
    val[:, :, 1, :] = 0.6
    val[1, 1, 0, :] = 0.9
    test = np.zeros((2, 2, 2, 2))
    for i in range(2):
        for j in range(2):
            test[i, j] = 0.1 * (2 * i + j + 1)
    dims = ("teacher_model", "student_model", "temperature", "seed")
    coords = {"teacher_model": teachers, "student_model": students, "temperature": [2, 8], "seed": [0, 1]}
    kwh = np.ones((2, 2, 2, 2)) * np.array([1.0, 3.0])[:, None, None, None]  # wrn_40_2's students cost 3×
    grid = xr.Dataset({"val_accuracy": (dims, val), "accuracy": (dims, test), "energy_kwh": (dims, kwh),
                       "train_flops": (dims, kwh * 1e9), "co2_g": (dims, kwh), "duration_s": (dims, kwh)},
                      coords=coords, attrs={"sweep_axes": ["teacher_model", "student_model", "temperature", "seed"]})
    sdims = ("teacher_model", "student_model", "seed")
    skwh = np.ones((2, 2, 2)) * 0.5
    stoch = xr.Dataset({"val_accuracy": (sdims, np.full((2, 2, 2), 0.7)), "accuracy": (sdims, np.full((2, 2, 2), 0.75)),
                        "energy_kwh": (sdims, skwh), "train_flops": (sdims, skwh * 1e9), "co2_g": (sdims, skwh),
                        "duration_s": (sdims, skwh)},
                       coords={k: coords[k] for k in sdims}, attrs={"sweep_axes": list(sdims)})
    comp = kd_comparison(spec, {"/teacher": xr.Dataset(), "/grid": grid, "/stoch": stoch})["/kd_comparison"]
    assert comp.attrs["pair_axes"] == ["teacher_model", "student_model"]
    assert dict(comp.sizes) == {"loss": 1, "teacher_model": 2, "student_model": 2, "method": 2}
    best = comp.best_temperature.sel(loss="hkd")
    assert best.values.tolist() == [[8, 8], [8, 2]]
    tuned = comp.accuracy_mean.sel({"loss": "hkd", "method": "tuned"})
    np.testing.assert_allclose(tuned.values, [[0.1, 0.2], [0.3, 0.4]])
    # per pair: the grid's 2 τ × 2 seeds, the stochastic run's 2 seeds
    np.testing.assert_allclose(comp.energy_kwh.sel({"loss": "hkd", "method": "tuned"}).values, [[4, 4], [12, 12]])
    np.testing.assert_allclose(comp.energy_ratio.sel(loss="hkd").values, [[4, 4], [12, 12]])
    table = kd_table(comp)
    assert table.splitlines()[0].startswith("| loss, teacher_model, student_model | method |")
    assert "| hkd, teacher_model=wrn_40_2, student_model=wrn_16_1 | tuned | 40.00 ± 0.00 % | 2 |" in table


def test_detection_grid_vs_stochastic_is_compared_on_map():
    """distill_detection stages pair like distill ones: τ picked on val mAP@0.5, test mAP@0.5
    reported as ``map_50_mean``; no FLOP count is recorded, so GFLOPs is unknown (—), not 0."""
    from compressflow import load_spec
    from compressflow.report import kd_table
    from compressflow.results.kd_comparison import kd_comparison

    spec = load_spec({"name": "d", "data": {"dataset": "shapes", "image_size": 48, "num_images": 30}, "stages": {
        "teacher": {"op": "train_detection"},
        "alone": {"op": "distill_detection", "needs": {"teacher": "teacher"}, "params": {"loss": "ce"}},
        "grid": {"op": "distill_detection", "needs": {"teacher": "teacher"}, "sweep": {"temperature": [2, 4, 8]}},
        "stoch": {"op": "distill_detection", "needs": {"teacher": "teacher"},
                  "params": {"temperature": {"stochastic": [2, 20]}}}}})
    costs = {"energy_kwh": 2e-4, "co2_g": 0.1, "duration_s": 60.0}
    grid = xr.Dataset({"val_map_50": ("temperature", [0.30, 0.10, 0.20]), "map_50": ("temperature", [0.05, 0.40, 0.30]),
                       **{k: ("temperature", [v] * 3) for k, v in costs.items()}}, coords={"temperature": [2, 4, 8]})
    stoch = xr.Dataset({"val_map_50": 0.25, "map_50": 0.2, **costs})
    out = kd_comparison(spec, {"/teacher": xr.Dataset(), "/alone": xr.Dataset(), "/grid": grid, "/stoch": stoch})
    assert list(out) == ["/kd_comparison"]
    comp = out["/kd_comparison"]
    assert comp.attrs["metric"] == "map_50" and "accuracy_mean" not in comp
    assert comp.best_temperature.values.tolist() == [2]  # val, not test (test would pick 4)
    assert comp.map_50_mean.sel({"method": "tuned"}).values.tolist() == [0.05]
    assert comp.map_50_mean.sel({"method": "stochastic"}).values.tolist() == [0.2]
    assert comp.energy_ratio.values.tolist() == pytest.approx([3.0])
    table = kd_table(comp)
    assert "test mAP@0.5 (mean ± std)" in table and "| hkd | tuned | 5.00 ± — % | 2 | 1 | — |" in table
