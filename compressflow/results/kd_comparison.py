"""STKD Table 4: a temperature grid search against stochastic temperature.

For every ``distill`` stage with a stochastic τ, the grid stage it is compared with is the
``distill`` stage that sweeps ``temperature`` with the same teacher and otherwise the same
parameters. Per loss:

* **tuned** — the grid's best τ is the one with the highest validation accuracy averaged over
  the other sweep axes (seeds); never the test split. Its test accuracy is reported as mean
  ± sample std over those points; its cost is the *whole grid's* (every τ had to be trained
  to find the best one). When several τ share the best validation accuracy, ``tied`` counts
  them and ``tied_temperatures`` lists them: the first is reported, and the report says that
  the choice between them is arbitrary.
* **stochastic** — test accuracy mean ± std over its points, and its own cost.
* ``energy_ratio`` = grid kWh / stochastic kWh; STKD's claim is ≈ the number of grid points.

The sample standard deviation of a single run is undefined: ``accuracy_std`` is NaN there
(the report shows —), never 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from compressflow.registries import SUMMARIES

if TYPE_CHECKING:
    from compressflow.engine.spec import PipelineSpec

__all__ = ["kd_comparison", "pair_grid_stages", "select_temperature", "tied_temperatures"]

COST_VARS = {"train_flops": "gflops", "energy_kwh": "energy_kwh", "co2_g": "co2_g", "duration_s": "duration_s"}


def pair_grid_stages(spec: PipelineSpec) -> list[tuple[str, str]]:
    """``(grid stage, stochastic stage)`` pairs of the spec."""

    def comparable(name: str) -> tuple[Any, ...]:
        st = spec.stages[name]
        params = {k: v for k, v in st.params.items() if k != "temperature"}
        return (st.needs, params, {k: v for k, v in st.sweep.items() if k != "temperature"}.keys())

    distill = [n for n, st in spec.stages.items() if st.op == "distill"]
    grids = [n for n in distill if "temperature" in spec.stages[n].sweep]
    pairs = []
    for name in distill:
        if not isinstance(spec.stages[name].params.get("temperature"), dict):
            continue
        match = [g for g in grids if comparable(g) == comparable(name)]
        if match:
            pairs.append((match[0], name))
    return pairs


def _mean_val(grid: xr.Dataset) -> xr.DataArray:
    other = [d for d in grid["val_accuracy"].dims if d != "temperature"]
    return grid["val_accuracy"].mean(other, skipna=True) if other else grid["val_accuracy"]


def select_temperature(grid: xr.Dataset) -> tuple[float, xr.DataArray]:
    """The τ with the best validation accuracy (mean over the other axes) and the test
    accuracies at that τ. Ties go to the first τ of the grid (see :func:`tied_temperatures`)."""
    val = _mean_val(grid)
    best = float(val["temperature"][int(np.nanargmax(val.values))])
    return best, grid["accuracy"].sel(temperature=best)


def tied_temperatures(grid: xr.Dataset, atol: float = 1e-9) -> list[float]:
    """Every τ whose mean validation accuracy equals the best one (within ``atol``; accuracies
    are counts over one validation split, so equal counts are equal floats). One τ: no tie."""
    val = _mean_val(grid)
    v = np.asarray(val.values, dtype=float)
    best = np.nanmax(v)
    return [float(t) for t, x in zip(val["temperature"].values, v) if np.isfinite(x) and abs(x - best) <= atol]


@SUMMARIES.register
def kd_comparison(spec: PipelineSpec, groups: dict[str, xr.Dataset]) -> dict[str, xr.Dataset]:
    """One ``kd_comparison`` group per grid/stochastic pair (suffixed by the stochastic
    stage's name when there are several). A pair with a stage that has no finished task yet
    (partial results of a submitted study, or a stage cancelled before any task ended) has no
    comparison."""
    pairs = pair_grid_stages(spec)
    out = {}
    for grid_name, stoch_name in pairs:
        if any("val_accuracy" not in groups[f"/{name}"] for name in (grid_name, stoch_name)):
            continue
        ds = _compare(spec, groups[f"/{grid_name}"], groups[f"/{stoch_name}"], grid_name, stoch_name)
        out["/kd_comparison" if len(pairs) == 1 else f"/kd_comparison_{stoch_name}"] = ds
    return out


def _compare(spec: PipelineSpec, grid: xr.Dataset, stoch: xr.Dataset, grid_name: str, stoch_name: str) -> xr.Dataset:
    losses = _losses(spec, grid_name, grid)
    rows = []
    for loss in losses:
        g = grid.sel(loss=loss) if "loss" in grid.dims else grid
        s = stoch.sel(loss=loss) if "loss" in stoch.dims else stoch
        best, tuned_acc = select_temperature(g)
        tied = tied_temperatures(g)
        rows.append(
            xr.Dataset(
                {
                    "accuracy_mean": ("method", [_mean(tuned_acc), _mean(s["accuracy"])]),
                    "accuracy_std": ("method", [_std(tuned_acc), _std(s["accuracy"])]),
                    "n_runs": ("method", [_count(tuned_acc), _count(s["accuracy"])]),
                    **{out: ("method", [_total(g, var), _total(s, var)]) for var, out in COST_VARS.items()},
                    "best_temperature": best,
                    "tied": len(tied),
                    "tied_temperatures": ", ".join(f"{t:g}" for t in tied),
                    "energy_ratio": _total(g, "energy_kwh") / _total(s, "energy_kwh"),
                    "grid_points": g.sizes["temperature"],
                },
                coords={"method": ["tuned", "stochastic"]},
            ).expand_dims(loss=[loss])
        )
    ds = xr.concat(rows, dim="loss")
    ds["gflops"] = ds["gflops"] / 1e9
    units = {"accuracy_mean": "1", "accuracy_std": "1", "n_runs": "count", "gflops": "GFLOP (training, all runs)",
             "energy_kwh": "kWh (all runs)", "co2_g": "g CO2eq (all runs)", "duration_s": "s (sum of task durations)",
             "best_temperature": "1", "energy_ratio": "1", "grid_points": "count",
             "tied": "count (τ sharing the best validation accuracy; 1 = no tie)"}
    for name, unit in units.items():
        ds[name].attrs["units"] = unit
    ds.attrs.update({"grid_stage": grid_name, "stochastic_stage": stoch_name,
                     "selection": "best mean validation accuracy over seeds (test split never used)"})
    return ds


def _losses(spec: PipelineSpec, name: str, grid: xr.Dataset) -> list[str]:
    if "loss" in grid.dims:
        return [str(v) for v in grid["loss"].values]
    return [spec.stages[name].params.get("loss", "hkd")]


def _finite(da: xr.DataArray) -> np.ndarray:
    v = np.asarray(da.values, dtype=float).ravel()
    return v[np.isfinite(v)]


def _mean(da: xr.DataArray) -> float:
    v = _finite(da)
    return float(v.mean()) if v.size else float("nan")


def _std(da: xr.DataArray) -> float:
    """Sample std (ddof 1); NaN for fewer than two runs, where it is undefined."""
    v = _finite(da)
    return float(v.std(ddof=1)) if v.size > 1 else float("nan")


def _count(da: xr.DataArray) -> int:
    return int(_finite(da).size)


def _total(ds: xr.Dataset, var: str) -> float:
    return float(_finite(ds[var]).sum())
