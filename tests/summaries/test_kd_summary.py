"""Best-τ selection is on validation accuracy, never test."""

import numpy as np
import xarray as xr

from compressflow.summaries.kd import select_temperature


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
