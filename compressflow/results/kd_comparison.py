"""STKD Table 4: a temperature grid search against stochastic temperature.

For every ``distill`` (or ``distill_detection``) stage with a stochastic τ, the grid stage it is
compared with is the stage of the same op that sweeps ``temperature`` with the same teacher and
otherwise the same parameters. Classification compares test accuracy (τ picked on
``val_accuracy``), detection test mAP@0.5 (τ picked on ``val_map_50``): the group's ``metric``
attribute names it, and its score variables are ``<metric>_mean`` / ``<metric>_std``
(``accuracy_mean``, ``map_50_mean``). Per loss:

* **tuned** — the grid's best τ is the one with the highest validation accuracy averaged over
  the other sweep axes (seeds); never the test split. Its test accuracy is reported as mean
  ± sample std over those points; its cost is the *whole grid's* (every τ had to be trained
  to find the best one). When several τ share the best validation accuracy, ``tied`` counts
  them and ``tied_temperatures`` lists them: the first is reported, and the report says that
  the choice between them is arbitrary.
* **stochastic** — test accuracy mean ± std over its points, and its own cost.
* ``energy_ratio`` = grid kWh / stochastic kWh; STKD's claim is ≈ the number of grid points.
* **searches** — a ``distill`` stage with a ``search:`` over ``temperature`` and otherwise the
  stochastic stage's parameters adds a method named by its strategy (``successive_halving``,
  ``asha``, ``tpe``, ...): per sweep point (seed) its best *finished* trial by validation
  accuracy (pruned trials never win), test accuracy mean ± std over those, and the cost of
  every task the searches ran, pruned ones included.
* ``energy_vs_stochastic`` = a method's kWh / the stochastic run's (1 for stochastic itself).
* **pairs** — every other sweep axis both stages share (a swept or renamed ``teacher_model``
  and ``student_model``, STKD Table 7) is a dimension of the comparison: τ is tuned, and costs
  are totalled, per point of those axes, never across them.

The sample standard deviation of a single run is undefined: ``accuracy_std`` is NaN there
(the report shows —), never 0.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import numpy as np

from compressflow.registries import SUMMARIES

if TYPE_CHECKING:
    import xarray as xr

if TYPE_CHECKING:
    from compressflow.spec import PipelineSpec

__all__ = ["KD_OPS", "REPLICATE_AXES", "best_trials", "kd_comparison", "pair_axes", "pair_grid_stages", "search_stages", "select_temperature", "tied_temperatures"]

#: ops a comparison pairs: the (validation, test) variables their stages record (the validation
#: one picks τ, the test one is reported) and the score's name in words
KD_OPS: dict[str, tuple[str, str, str]] = {"distill": ("val_accuracy", "accuracy", "accuracy"),
                                           "distill_detection": ("val_map_50", "map_50", "mAP@0.5")}

COST_VARS = {"train_flops": "gflops", "energy_kwh": "energy_kwh", "co2_g": "co2_g", "duration_s": "duration_s"}


def pair_grid_stages(spec: PipelineSpec) -> list[tuple[str, str]]:
    """``(grid stage, stochastic stage)`` pairs of the spec."""

    def comparable(name: str) -> tuple[Any, ...]:
        st = spec.stages[name]
        params = {k: v for k, v in st.params.items() if k != "temperature"}
        return (st.op, st.needs, params, {k: v for k, v in st.sweep.items() if k != "temperature"}.keys())

    distill = [n for n, st in spec.stages.items() if st.op in KD_OPS]
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
        val, test, label = KD_OPS[spec.stages[stoch_name].op]
        grid, stoch = (_scored(groups, n, val, test) for n in (grid_name, stoch_name))
        if grid is None or stoch is None:
            continue
        searched = {n: ds for n in search_stages(spec, stoch_name) if (ds := _scored(groups, n, val, test)) is not None}
        comparison = _compare_per_pair(spec, grid, stoch, grid_name, stoch_name, searched)
        if comparison is None:
            continue
        comparison = comparison.rename({"accuracy_mean": f"{test}_mean", "accuracy_std": f"{test}_std"})
        comparison.attrs.update({"metric": test, "metric_label": label,
                                 "selection": f"best mean validation {label} over seeds (test split never used)"})
        out["/kd_comparison" if len(pairs) == 1 else f"/kd_comparison_{stoch_name}"] = comparison
    return out


def _scored(groups: dict[str, xr.Dataset], name: str, val: str, test: str) -> xr.Dataset | None:
    """Stage ``name``'s group with its scores renamed to the ones the comparison reads
    (``val_accuracy``, ``accuracy``); None while it has no finished task."""
    import xarray as xr

    ds = groups.get(f"/{name}", xr.Dataset())
    if val not in ds or test not in ds:
        return None
    return ds if test == "accuracy" else ds.rename({val: "val_accuracy", test: "accuracy"})


def search_stages(spec: PipelineSpec, stoch_name: str) -> list[str]:
    """The stages of the stochastic stage's op that search ``temperature`` with its teacher,
    other parameters and sweep axes."""
    st = spec.stages[stoch_name]
    params = {k: v for k, v in st.params.items() if k != "temperature"}
    def budgeted(o) -> dict:  # a budget sets its resource (epochs) to its max
        b = o.search.budget
        return {**o.params, **({b.resource: b.max} if b is not None else {})}

    return [name for name, o in spec.stages.items()
            if o.op == st.op and o.search is not None and "temperature" in o.search.space
            and o.needs == st.needs and budgeted(o) == params and o.sweep.keys() == st.sweep.keys()]


def best_trials(ds: xr.Dataset) -> xr.DataArray:
    """Test accuracy of each search's best finished trial by validation accuracy (one per
    point of the other axes; NaN where no trial finished)."""
    val = ds["val_accuracy"].where(ds["status"] == "ok")
    pick = val.fillna(-np.inf).argmax("trial")
    return ds["accuracy"].isel(trial=pick).where(val.max("trial").notnull())


#: axes a comparison averages over (replicates) or compares along; every other shared sweep axis
#: (a swept model, a renamed ``teacher_model``/``student_model``) gets its own rows
REPLICATE_AXES = ("seed", "temperature", "loss")


def pair_axes(grid: xr.Dataset, stoch: xr.Dataset) -> list[str]:
    """Sweep axes both stages' groups share, other than seeds, τ and the loss: one comparison
    per point of them (per teacher × student pair in STKD's Table 7), not one averaged over them."""
    shared = [str(a) for a in grid.attrs.get("sweep_axes", ()) if a in stoch.attrs.get("sweep_axes", ())]
    return [a for a in shared if a not in REPLICATE_AXES and a in grid.dims and a in stoch.dims]


def _compare_per_pair(spec: PipelineSpec, grid: xr.Dataset, stoch: xr.Dataset, grid_name: str, stoch_name: str,
                      searched: dict[str, xr.Dataset]) -> xr.Dataset | None:
    import xarray as xr

    axes = pair_axes(grid, stoch)
    if not axes:
        return _compare(spec, grid, stoch, grid_name, stoch_name, searched)
    parts = []
    for values in itertools.product(*(grid[a].values.tolist() for a in axes)):
        at = dict(zip(axes, values))
        if any(v not in stoch[a].values.tolist() for a, v in at.items()):
            continue  # a point only the grid swept has nothing to compare with

        def pick(ds: xr.Dataset) -> xr.Dataset:
            return ds.sel({a: v for a, v in at.items() if a in ds.dims})

        found = {n: pick(ds) for n, ds in searched.items()}
        part = _compare(spec, pick(grid), pick(stoch), grid_name, stoch_name, found)
        parts.append(part.expand_dims({a: [v] for a, v in at.items()}))
    if not parts:  # the two stages share no point of those axes: no pair to compare
        return None
    ds = xr.combine_by_coords(parts, combine_attrs="override")
    assert isinstance(ds, xr.Dataset)
    ds = ds.transpose("loss", *axes, "method")
    ds.attrs["pair_axes"] = axes
    return ds


def _compare(spec: PipelineSpec, grid: xr.Dataset, stoch: xr.Dataset, grid_name: str, stoch_name: str,
             searched: dict[str, xr.Dataset] | None = None) -> xr.Dataset:
    import xarray as xr

    losses = _losses(spec, grid_name, grid)
    searched = searched or {}
    strategies = [spec.stages[n].search.strategy for n in searched]  # type: ignore[union-attr]
    methods = ["tuned", "stochastic", *(strategies if len(set(strategies)) == len(strategies) else searched)]
    rows = []
    for loss in losses:
        g = grid.sel(loss=loss) if "loss" in grid.dims else grid
        s = stoch.sel(loss=loss) if "loss" in stoch.dims else stoch
        found = [ds.sel(loss=loss) if "loss" in ds.dims else ds for ds in searched.values()]
        best, tuned_acc = select_temperature(g)
        tied = tied_temperatures(g)
        accs = [tuned_acc, s["accuracy"], *(best_trials(f) for f in found)]
        costs = [g, s, *found]
        stoch_kwh = _total(s, "energy_kwh")
        rows.append(
            xr.Dataset(
                {
                    "accuracy_mean": ("method", [_mean(a) for a in accs]),
                    "accuracy_std": ("method", [_std(a) for a in accs]),
                    "n_runs": ("method", [_count(a) for a in accs]),
                    **{out: ("method", [_total(c, var) for c in costs]) for var, out in COST_VARS.items()},
                    "energy_vs_stochastic": ("method", [_total(c, "energy_kwh") / stoch_kwh for c in costs]),
                    "best_temperature": best,
                    "tied": len(tied),
                    "tied_temperatures": ", ".join(f"{t:g}" for t in tied),
                    "energy_ratio": _total(g, "energy_kwh") / stoch_kwh,
                    "grid_points": g.sizes["temperature"],
                },
                coords={"method": methods},
            ).expand_dims(loss=[loss])
        )
    ds = xr.concat(rows, dim="loss")
    ds["gflops"] = ds["gflops"] / 1e9
    units = {"accuracy_mean": "1", "accuracy_std": "1", "n_runs": "count", "gflops": "GFLOP (training, all runs)",
             "energy_kwh": "kWh (all runs)", "co2_g": "g CO2eq (all runs)", "duration_s": "s (sum of task durations)",
             "best_temperature": "1", "energy_ratio": "1", "grid_points": "count", "energy_vs_stochastic": "1",
             "tied": "count (τ sharing the best validation accuracy; 1 = no tie)"}
    for name, unit in units.items():
        ds[name].attrs["units"] = unit
    ds.attrs.update({"grid_stage": grid_name, "stochastic_stage": stoch_name, "search_stages": list(searched),
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
    if f"search_{var}" in ds.data_vars:  # searches: each ledger task once, however many trials
        return float(_finite(ds[f"search_{var}"]).sum())  # shared it, over this slice's searches
    if "search_energy_kwh" in ds.data_vars and "task_key" in ds:
        # a search's recorded variable (train_flops): a task two trials share counts once
        once = {k: v for k, v in zip(ds["task_key"].values.ravel(), ds[var].values.ravel().astype(float))
                if k and np.isfinite(v)}
        return float(sum(once.values()))
    if var not in ds:  # a cost the op does not record (detection has no FLOP count): unknown, not 0
        return float("nan")
    return float(_finite(ds[var]).sum())
