"""A search stage's results group (:mod:`compressflow.engine.search` runs the search; this reads
what became of its trials, through :class:`SearchLike`): dim ``trial`` (beside the
stage's sweep axes) with every searched parameter, the metric at every rung, the trial's
``status`` (``ok``, ``pruned``, ``failed``, ``cancelled``; ``running``/``pending`` while it
runs) and the energy and CO₂ of all its tasks (what that trial cost; a task two trials share —
the sampler proposed one configuration twice — is in both, so the variables ``search_energy_kwh``, ``search_co2_g``, ... on the sweep axes give
each search's total with each task once, and the attrs of the same names the stage's); the best trial in the
attrs, and for several objectives the Pareto set (``pareto``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import xarray as xr

from compressflow.spec.search import SearchSpec

__all__ = ["SearchLike", "TrialLike", "search_dataset"]


class _Keyed(Protocol):
    @property
    def key(self) -> str: ...


class TrialLike(Protocol):
    """What the results read of a search's trial (:class:`compressflow.engine.search.Trial`)."""

    @property
    def number(self) -> int: ...
    @property
    def params(self) -> Mapping[str, Any]: ...
    @property
    def point(self) -> Mapping[str, Any]: ...
    @property
    def status(self) -> str: ...
    @property
    def rungs(self) -> Mapping[int, float]: ...
    @property
    def nodes(self) -> Sequence[_Keyed]: ...
    @property
    def values(self) -> list[float] | None: ...
    @property
    def latest(self) -> _Keyed | None: ...


class SearchLike(Protocol):
    """What the results read of one search (:class:`compressflow.engine.search.Search`): its
    stage, spec, sweep point, trials, and its best trial or Pareto set."""

    @property
    def stage(self) -> str: ...
    @property
    def search(self) -> SearchSpec: ...
    @property
    def point(self) -> Mapping[str, Any]: ...
    @property
    def trials(self) -> Sequence[TrialLike]: ...

    def best(self) -> TrialLike | None: ...

    def pareto(self) -> Sequence[TrialLike]: ...

_SUMMED = ("energy_kwh", "facility_kwh", "co2_g", "duration_s")


def search_dataset(ds: xr.Dataset, found: Sequence[SearchLike], ledger: xr.Dataset) -> xr.Dataset:
    """``ds`` (the stage's group, one point per trial's latest task) with the search's
    per-trial variables and summary attrs added."""
    if not found:
        return ds
    spec = found[0].search
    metric = spec.directions()[0][0]
    budgets = sorted({r for s in found for t in s.trials for r in t.rungs})
    per_trial = [_trial_dataset(s, t, ledger, metric, budgets, set(map(str, ds.data_vars)))
                 for s in found for t in s.trials if t.latest is not None]
    known = set(ledger["task"].values.tolist())
    unique = sorted({n.key for s in found for t in s.trials for n in t.nodes} & known)
    totals = _cost(ledger, unique)  # each task once, however many trials shared it
    if per_trial:
        # and per search (per sweep point: a search at one loss and seed), so that a slice of
        # the group costs what its own searches ran
        per_trial += [_search_totals(s, ledger, known) for s in found]
        extra = xr.merge(per_trial, join="outer", compat="no_conflicts", combine_attrs="drop")
        if "pareto" in extra:  # the outer merge made it float; a trial without a point is not in the set
            extra["pareto"] = extra["pareto"].fillna(0).astype(bool)
        for name in extra.data_vars:
            ds[name] = extra[name]
        for name in _SUMMED:
            if name in ds and name in ledger:
                ds[name].attrs.update(ledger[name].attrs)
    best = [_best(s) for s in found]
    ds.attrs.update({
        "search_strategy": spec.strategy,
        "search_sampler": spec.proposer(),
        "search_objectives": json.dumps(spec.directions()),
        "search_space": json.dumps({k: v.model_dump(exclude_none=True) for k, v in spec.space.items()}),
        "search_budget": json.dumps(spec.budget.model_dump() if spec.budget is not None else None),
        "search_trials": int(sum(len(s.trials) for s in found)),
        "best": json.dumps([b for b in best if b is not None]),
        **(totals if per_trial else {}),
    })
    return ds


def _search_totals(search: SearchLike, ledger: xr.Dataset, known: set[str]) -> xr.Dataset:
    """``search_<cost>`` of one search, each of its tasks once, on its sweep point's axes."""
    keys = sorted({n.key for t in search.trials for n in t.nodes} & known)
    ds = xr.Dataset({name: ((), value) for name, value in _cost(ledger, keys).items()})
    for name in _SUMMED:
        if name in ledger:
            ds[f"search_{name}"].attrs.update(ledger[name].attrs)
    return ds.expand_dims({axis: [value] for axis, value in search.point.items()})


def _cost(ledger: xr.Dataset, keys: list[str]) -> dict[str, float]:
    """``search_<cost>``: the ledger's costs of ``keys``, summed."""
    return {f"search_{name}": float(np.nansum(ledger[name].sel(task=keys).values.astype(float)))
            for name in _SUMMED if name in ledger}


def _trial_dataset(search: SearchLike, t: TrialLike, ledger: xr.Dataset, metric: str, budgets: list[int],
                   taken: set[str]) -> xr.Dataset:
    known = set(ledger["task"].values.tolist())
    keys = list(dict.fromkeys(n.key for n in t.nodes if n.key in known))
    rows = ledger.sel(task=keys)
    values: dict[str, Any] = {"status": t.status}
    for name in _SUMMED:
        if name in rows:
            total = rows[name].values.astype(float)
            values[name] = float(np.nansum(total)) if np.isfinite(total).any() else (0.0 if not keys else np.nan)
    for name, value in t.params.items():  # a parameter named like a recorded variable keeps both
        values[name if name not in taken else f"param_{name}"] = value
    if t.rungs:
        values["budget"] = max(t.rungs)  # the resource (epochs) it was given in the end
    data: dict[str, Any] = {k: ((), v) for k, v in values.items()}
    if budgets:
        data[f"{metric}_by_rung"] = (("rung",), [t.rungs.get(b, np.nan) for b in budgets])
    if len(search.search.directions()) > 1:
        data["pareto"] = ((), any(p is t for p in search.pareto()))
    ds = xr.Dataset(data, coords={"rung": budgets} if budgets else None)
    return ds.expand_dims({axis: [value] for axis, value in t.point.items()})


def _best(search: SearchLike) -> dict[str, Any] | None:
    best = search.best()
    if best is None:
        return None
    return {"point": best.point, "params": best.params, "value": best.values[0] if best.values else None}
