"""Task records → one labelled :class:`xarray.DataTree` (saved and opened by
:mod:`compressflow.results.store`): the ledger, one group per stage on its sweep axes, and
the study-level summaries. The layout and the ``<name>_recorded`` renaming rule are described
in :mod:`compressflow.results`.

Plain records in, a tree out: the inputs are the spec, each stage's tasks (anything with a
``key`` and a sweep ``point``, e.g. the engine's nodes) and their ledger entries; nothing here
imports the engine or torch."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Protocol
from datetime import datetime, timezone

import numpy as np
import xarray as xr

from compressflow.energy.carbon import carbon_intensity, co2_grams
from compressflow.errors import SpecError
from compressflow.registries import SUMMARIES
from compressflow.results.search import SearchLike, search_dataset
from compressflow.rundir.records import LedgerEntry
from compressflow.spec import PipelineSpec
from compressflow.spec.schema import GROUP_NAMES, STAGE_LEDGER

__all__ = ["LEDGER_GROUP", "RECORDED_SUFFIX", "STAGE_LEDGER", "TaskRef", "build_results", "ledger_keys"]

LEDGER_UNITS = {
    "duration_s": "s", "energy_kwh": "kWh", "cpu_kwh": "kWh", "gpu_kwh": "kWh", "ram_kwh": "kWh",
    "energy_lost_kwh": "kWh", "facility_kwh": "kWh", "co2_g": "g CO2eq", "resumed_from_epoch": "epochs",
    "attempts_kwh": "kWh",
}
LEDGER_DESCRIPTIONS = {
    "energy_kwh": "IT energy (CPU + GPU + RAM, no PUE), attempts that did not finish included",
    "energy_lost_kwh": "IT energy of attempts that did not finish (worker killed, stage failed); "
                       "included in energy_kwh",
    "facility_kwh": "facility energy = energy_kwh x pue (includes PUE, as STKD's Eq. 4)",
    "co2_g": "energy_kwh x pue x carbon intensity",
    "reused": "the task's record came from an earlier run (not run again; its start, end and energy are "
              "that run's)",
    "resumed_from_epoch": "epochs restored from the task's saved training states instead of trained again "
                          "(summed over its fits; 0: trained from the start)",
    "attempts_kwh": "IT energy (kWh) of each attempt of the task, in start order, space-separated",
}
#: suffix of a recorded variable renamed because its name is a dimension or ledger variable of its group
RECORDED_SUFFIX = "_recorded"
LEDGER_GROUP = "tasks"
_POINT = "__compressflow_point__"  # the stacked dimension of a stage's points before they are unstacked


class TaskRef(Protocol):
    """A task as the results place it: its key and its sweep point (the engine's ``Node``)."""

    @property
    def key(self) -> str: ...
    @property
    def point(self) -> dict[str, Any]: ...


def ledger_keys(stages: Mapping[str, Sequence[TaskRef]], searches: Sequence[SearchLike] = ()) -> list[str]:
    """Every task once, in ledger order: the stages' tasks in stage order, then every rung of
    every search's trials not among them."""
    keys = {n.key: None for nodes in stages.values() for n in nodes}
    for search in searches:
        keys.update({n.key: None for t in search.trials for n in t.nodes if n.key not in keys})
    return list(keys)


def build_results(spec: PipelineSpec, stages: Mapping[str, Sequence[TaskRef]], tasks: Mapping[str, LedgerEntry], *,
                  reused: Collection[str] = (), searches: Sequence[SearchLike] = (),
                  provenance: Mapping[str, str] | None = None) -> xr.DataTree:
    """Assemble the results tree of a study.

    Parameters
    ----------
    spec : PipelineSpec
        The study.
    stages : mapping
        Stage → its tasks (each with a ``key`` and its sweep ``point``), in dependency order.
    tasks : mapping
        Task key → its ledger entry (finished, or ``pending``/``running`` for partial results),
        for every task of :func:`ledger_keys`.
    reused : collection of str
        Keys of the tasks whose records came from an earlier run.
    searches : sequence
        The searches of the search stages (:class:`~compressflow.results.search.SearchLike`).
    provenance : mapping, optional
        Root attrs (versions, commit, machines; :func:`compressflow.engine.provenance.provenance`).

    CO₂ is (re)computed here from each task's measured kWh with the spec's PUE and the
    country's offline carbon intensity (:func:`compressflow.energy.co2_grams`), so reused
    records always match the current spec.
    """
    intensity = carbon_intensity(spec.energy.country, spec.energy.region)
    ledger = _ledger([tasks[k] for k in ledger_keys(stages, searches)], spec.energy.pue, intensity, reused=set(reused))
    ledger.attrs.update(
        {"carbon_intensity_g_per_kwh": intensity, "pue": spec.energy.pue, "country": spec.energy.country}
    )
    groups: dict[str, xr.Dataset] = {f"/{LEDGER_GROUP}": ledger}
    for stage, nodes in stages.items():
        if stage == LEDGER_GROUP:  # the spec refuses it; this guards the ledger if a caller skipped that
            raise SpecError(f"stages.{stage}: the name {stage!r} is taken by the results ledger "
                            f"(/{LEDGER_GROUP}); rename the stage (its finished tasks are reused)")
        if not nodes:  # a search that has not asked for a trial yet
            groups[f"/{stage}"] = xr.Dataset(attrs={"op": spec.stages[stage].op})
            continue
        groups[f"/{stage}"] = _stage_dataset(spec, stage, nodes, [tasks[n.key] for n in nodes], ledger)
        if spec.stages[stage].search is not None:
            groups[f"/{stage}"] = search_dataset(groups[f"/{stage}"], [s for s in searches if s.stage == stage],
                                                 ledger)
    for name in SUMMARIES:
        summary = SUMMARIES.get(name)(spec, groups)
        taken = [path for path in summary if path in groups]
        if taken:
            what = "results ledger" if taken[0] == f"/{LEDGER_GROUP}" else "stage"
            raise SpecError(f"stages.{taken[0].lstrip('/')}: the name {taken[0].lstrip('/')!r} is taken by the "
                            f"study summary {name!r}, which would overwrite that {what} group; rename the stage "
                            "(its finished tasks are reused)")
        groups.update(summary)
    tree = xr.DataTree.from_dict(groups)
    tree.attrs.update(
        {
            "name": spec.name,
            "spec": json.dumps(spec.model_dump(mode="json")),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **(provenance or {}),
        }
    )
    return tree


def _ledger(tasks: list[LedgerEntry], pue: float, intensity: float, *, reused: Collection[str] = ()) -> xr.Dataset:
    def energy(t: LedgerEntry, name: str) -> float:
        return float(t.energy.get(name, np.nan))

    kwh = np.array([energy(t, "energy_kwh") for t in tasks])
    ds = xr.Dataset(
        {
            "stage": ("task", [t.stage for t in tasks]),
            "op": ("task", [t.op for t in tasks]),
            "worker": ("task", [t.worker for t in tasks]),
            "status": ("task", [t.status for t in tasks]),
            "error": ("task", [t.error for t in tasks]),
            "point": ("task", [json.dumps(t.point, default=str) for t in tasks]),
            "start": ("task", _datetimes([t.start for t in tasks])),
            "end": ("task", _datetimes([t.end for t in tasks])),
            "duration_s": ("task", np.array([t.end - t.start for t in tasks])),
            "energy_kwh": ("task", kwh),
            "cpu_kwh": ("task", np.array([energy(t, "cpu_kwh") for t in tasks])),
            "gpu_kwh": ("task", np.array([energy(t, "gpu_kwh") for t in tasks])),
            "ram_kwh": ("task", np.array([energy(t, "ram_kwh") for t in tasks])),
            "energy_lost_kwh": ("task", np.array([energy(t, "energy_lost_kwh") for t in tasks])),
            "facility_kwh": ("task", kwh * pue),
            "co2_g": ("task", co2_grams(kwh, pue, intensity)),
            "energy_method": ("task", [str(t.energy.get("method", "")) for t in tasks]),
            "attempts": ("task", np.array([t.attempts for t in tasks], dtype=np.int64)),
            "workers_tried": ("task", [" ".join(t.workers_tried) for t in tasks]),
            "reused": ("task", np.array([t.key in reused for t in tasks], dtype=bool)),
            "resumed_from_epoch": ("task", np.array([t.resumed_from_epoch for t in tasks], dtype=np.int64)),
            "attempts_kwh": ("task", [" ".join(repr(float(e)) for e in t.attempts_kwh) for t in tasks]),
        },
        coords={"task": [t.key for t in tasks]},
    )
    for name, unit in LEDGER_UNITS.items():
        ds[name].attrs["units"] = unit
    for name, text in LEDGER_DESCRIPTIONS.items():
        ds[name].attrs["description"] = text
    return ds


def _datetimes(seconds: list[float]) -> np.ndarray:
    ns = np.array([np.nan if s is None else s for s in seconds], dtype=float) * 1e9
    out = np.full(len(ns), np.datetime64("NaT"), dtype="datetime64[ns]")
    ok = np.isfinite(ns)
    out[ok] = ns[ok].astype("int64").astype("datetime64[ns]")
    return out


def _stage_dataset(spec: PipelineSpec, stage: str, nodes: Sequence[TaskRef], tasks: list[LedgerEntry],
                   ledger: xr.Dataset) -> xr.Dataset:
    # the stage's dimensions: its tasks' sweep axes (upstream axes first)
    axes = list({axis: None for node in nodes for axis in node.point})
    # a task shared with another stage (same work, e.g. a teacher that is also one point of an
    # lr grid) carries that stage's point; this stage's nodes say where it sits here
    points = [node.point for node in nodes]
    label = {axis: _axis_labeller([p[axis] for p in points]) for axis in axes}
    renamed: dict[str, str] = {}
    parts = [_keep_recorded(t.record.metrics if t.record is not None else xr.Dataset(), (*axes, *GROUP_NAMES),
                            renamed) for t in tasks]
    # xarray refuses to concatenate three or more parts when one lacks a dimension coordinate the
    # others have (e.g. a failed task's empty record beside per-epoch curves): give it that index
    index: dict[str, xr.DataArray] = {}
    for p in parts:
        for name in p.indexes:
            index.setdefault(str(name), p[name])
    parts = [p.assign_coords({n: c for n, c in index.items() if n not in p.coords}) for p in parts]
    keys = [t.key for t in tasks]
    rows = ledger[list(STAGE_LEDGER)].sel(task=keys)
    # one concat along the stage's points and one unstack onto its sweep axes (missing
    # combinations become NaN): the same grid as merging one dataset per point with an outer
    # join, without aligning every point against all the others (seconds for 200 points)
    merged = xr.concat([p.expand_dims(_POINT) for p in parts], dim=_POINT, join="outer", data_vars="all",
                       coords="different", compat="no_conflicts", combine_attrs="drop_conflicts")
    for name in STAGE_LEDGER:
        merged[name] = (_POINT, rows[name].values, rows[name].attrs)
    merged["task_key"] = (_POINT, np.array(keys, dtype=object))
    if not axes:  # a stage without sweep axes is one task
        merged = merged.isel({_POINT: 0})
    else:
        merged = merged.assign_coords({axis: (_POINT, [label[axis](p[axis]) for p in points]) for axis in axes})
        if len(axes) == 1:
            merged = merged.swap_dims({_POINT: axes[0]}).sortby(axes[0])
        else:
            merged = merged.set_index({_POINT: axes}).unstack(_POINT)
        merged = merged.transpose(*axes, ...)
    st = spec.stages[stage]
    merged.attrs.update({"op": st.op, "params": json.dumps(st.params), "needs": json.dumps(st.needs), "sweep_axes": axes,
                         "scheduling_policy": st.scheduling.policy})
    if renamed:
        merged.attrs["renamed"] = json.dumps(renamed, sort_keys=True)
    for name in map(str, merged.data_vars):  # concat keeps attrs of the first part only if all agree
        for p in parts:
            if name in p and "units" in p[name].attrs:
                merged[name].attrs["units"] = p[name].attrs["units"]
                break
    return merged


def _keep_recorded(ds: xr.Dataset, reserved: tuple[str, ...], renamed: dict[str, str]) -> xr.Dataset:
    """``ds`` with every variable or dimension named in ``reserved`` renamed to
    ``<name>_recorded`` (suffixed again while that is taken too), so neither a sweep axis nor a
    ledger variable replaces or collides with a recorded value. Adds each rename to ``renamed``."""
    names = set(ds.variables) | set(ds.dims)
    clash = [n for n in reserved if n in names]
    if not clash:
        return ds
    mapping = {}
    for name in clash:
        new = name + RECORDED_SUFFIX
        while new in names or new in reserved:
            new += RECORDED_SUFFIX
        mapping[name] = new
        names.add(new)
    ds = ds.rename(mapping)
    for old, new in mapping.items():
        if new in ds.variables:
            ds[new].attrs["recorded_name"] = old
        renamed[new] = old
    return ds


def _axis_labeller(values: list) -> Callable[[Any], Any]:
    """Sweep values label a dimension as they are when all are numbers, all strings or all
    booleans; an axis mixing kinds or holding a structured value
    (``temperature: [2, {stochastic: [2, 20]}]``) is labelled by every value's JSON text, so
    one typed coordinate holds them all."""
    kinds = {bool if isinstance(v, bool) else float if isinstance(v, (int, float)) else type(v) for v in values}
    if len(kinds) == 1 and kinds <= {bool, float, str}:
        return lambda v: v
    return lambda v: json.dumps(v, sort_keys=True)
