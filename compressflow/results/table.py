"""The results of a study as one :class:`pandas.DataFrame`: one row per task or sweep point of
every stage, with its sweep values, its scalar metrics and what it cost — the question "accuracy
against kWh per stage" in one call, as Ray Tune's ``ResultGrid.get_dataframe()`` and Optuna's
``study.trials_dataframe()`` answer it.

Reads the tree that :mod:`compressflow.results.build` writes (stage groups on their sweep axes,
the ``/tasks`` ledger); imports neither torch nor Dask."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from compressflow.errors import InputError
from compressflow.results.store import open_results

__all__ = ["COST_COLUMNS", "ID_COLUMNS", "to_dataframe"]

#: the columns every row starts with, before its stage's sweep values
ID_COLUMNS = ("stage", "op")
#: the columns every row ends with: its status and cost (from the ledger), whether it was reused, its task
COST_COLUMNS = ("energy_kwh", "facility_kwh", "co2_g", "duration_s", "reused", "task_key")
_LEDGER = "tasks"
_RECORDED = "_recorded"


def to_dataframe(results: xr.DataTree | str | os.PathLike[str]) -> pd.DataFrame:
    """The results as one table: one row per task or sweep point of every stage.

    Parameters
    ----------
    results : xarray.DataTree or path
        The results of :func:`compressflow.run` or :meth:`compressflow.Study.results`, or a run
        directory (or its ``results.zarr``), opened with :func:`compressflow.open_results`. A
        stage's node (``tree["kd"]``) gives that stage's rows only.

    Returns
    -------
    pandas.DataFrame
        Stages in the spec's order; a stage's points in its sweep's order (the order of the
        spec's ``sweep:`` lists; a search stage's trials in the order they were asked). Columns:

        ``stage``, ``op`` (str)
            The stage and its op.
        one column per sweep axis
            Of every stage (a sweep over ``temperature`` and another over ``sparsity`` give
            both columns); NaN (None for text) in the rows of stages that do not sweep it. A
            search stage adds ``trial`` and one column per searched parameter (the trial's
            value).
        ``status`` (str)
            ``ok``, ``failed``, ``upstream_failed``, ``cancelled``; ``pending`` or ``running``
            in partial results; a search's trial may be ``pruned``.
        the scalar metrics, sorted by name (float)
            Every variable of the stage group that has one value per point: ``accuracy``,
            ``val_accuracy``, ``params``, ``macs``, ``train_flops``, ``task_flops`` (FLOP),
            detection's ``map_50``, ``map_50_95``, ..., a search's ``budget``; NaN where a stage
            does not record it or its task has not finished. Per-class and per-epoch
            variables, curves and confusion matrices are left out: they stay in
            ``tree[stage]``. Boolean metrics (``pareto``) stay booleans.
        ``energy_kwh``, ``facility_kwh``, ``co2_g``, ``duration_s`` (float)
            The task's IT energy, facility energy, CO₂ (g) and seconds from the ledger; a
            search trial's sum over its tasks (rungs). NaN for a task not finished.
        ``reused`` (bool)
            The task's record came from an earlier run.
        ``task_key`` (str)
            The task (the ledger's ``task``): points that share one task have the same key,
            so ``frame.drop_duplicates("task_key")`` counts each task's energy once.

        A sweep axis or metric named like one of these columns (``stage``, ``op``,
        ``reused``), and a metric named like another stage's sweep axis (an unswept prune's
        achieved ``sparsity`` beside a stage that sweeps ``sparsity``), becomes
        ``<name>_recorded``.

    Raises
    ------
    InputError
        If ``results`` is neither a results tree nor a path, or the tree has no ``/tasks``
        ledger (one line).
    FileNotFoundError
        If a path holds no results.

    Examples
    --------
    >>> import compressflow
    >>> tree = compressflow.run("tasks/quickstart.yaml")                       # doctest: +SKIP
    >>> table = compressflow.to_dataframe(tree)                                # doctest: +SKIP
    >>> table[["stage", "accuracy", "energy_kwh", "co2_g"]]                    # doctest: +SKIP
         stage  accuracy  energy_kwh     co2_g
    0  teacher  0.961111    0.000412  0.159243
    1     test  0.961111    0.000003  0.001181
    >>> compressflow.to_dataframe("runs/quickstart").groupby("stage").energy_kwh.sum()  # doctest: +SKIP
    """
    tree, only = _tree(results)
    spec = _spec(tree)
    reused = _reused(tree[_LEDGER].to_dataset())
    frames = [_stage_frame(name, tree.children[name].to_dataset(), spec, reused)
              for name in _stages(tree, spec) if only is None or name == only]
    frames = _recorded_apart([f for f in frames if len(f)])
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object if c in (*ID_COLUMNS, "status", "task_key") else
                                          bool if c == "reused" else float)
                             for c in (*ID_COLUMNS, "status", *COST_COLUMNS)})
    columns = _columns(frames)
    frame = pd.concat([f.reindex(columns=columns) for f in frames], ignore_index=True)
    flags = {c for c in columns if all(f[c].dtype == bool for f in frames if c in f)}  # before NaN fills them
    return _dtypes(frame, metrics=set(columns) - {*ID_COLUMNS, "status", *COST_COLUMNS} - _parameters(frames),
                   flags=flags)


def _tree(results: Any) -> tuple[xr.DataTree, str | None]:
    """The whole results tree, and the stage to keep when ``results`` is one stage's node."""
    if isinstance(results, (str, os.PathLike)):
        return open_results(Path(results)), None
    if not isinstance(results, xr.DataTree):
        hint = (" (pass the tree itself, not tree[stage].to_dataset())" if isinstance(results, xr.Dataset)
                else "")
        raise InputError(f"to_dataframe: results must be the xarray.DataTree of compressflow.run / open_results "
                         f"or a run directory path, not {type(results).__name__}{hint}")
    root: xr.DataTree = results.root
    if _LEDGER not in root.children:
        raise InputError(f"to_dataframe: the tree has no /{_LEDGER} ledger, so it is not compressflow results "
                         f"(groups: {sorted(map(str, root.children))}); pass what compressflow.run or "
                         "compressflow.open_results returned")
    if results is root or results.parent is not root or results.name == _LEDGER:
        return root, None
    return root, str(results.name)


def _spec(tree: xr.DataTree) -> dict[str, Any]:
    try:
        spec = json.loads(tree.attrs.get("spec", "{}"))
    except (TypeError, ValueError):
        return {}
    return spec.get("stages", {}) if isinstance(spec, dict) else {}


def _stages(tree: xr.DataTree, spec: Mapping[str, Any]) -> list[str]:
    """The stage groups (not the ledger, not a study summary such as ``kd_comparison``), in the
    spec's order (a store lists its groups by name)."""
    if spec:
        return [name for name in spec if name in tree.children and name != _LEDGER]
    return [str(name) for name, node in tree.children.items()
            if name != _LEDGER and "op" in node.attrs and "task_key" in node.to_dataset()]


def _reused(ledger: xr.Dataset) -> dict[str, bool]:
    if "reused" not in ledger:
        return {}
    return dict(zip(map(str, ledger["task"].values), map(bool, ledger["reused"].values)))


def _stage_frame(stage: str, ds: xr.Dataset, spec: Mapping[str, Any], reused: Mapping[str, bool]) -> pd.DataFrame:
    if "task_key" not in ds:  # a search that has not asked for a trial yet
        return pd.DataFrame()
    axes = [str(d) for d in ds["task_key"].dims]
    shape = tuple(ds.sizes[a] for a in axes)
    per_point = [str(v) for v, var in ds.data_vars.items() if set(map(str, var.dims)) == set(axes)]
    columns: dict[str, np.ndarray] = {}
    grid = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    for axis, index in zip(axes, grid):
        labels = ds[axis].values if axis in ds.coords else np.arange(ds.sizes[axis])
        columns[axis] = np.asarray(labels, dtype=object)[index.reshape(-1)]
    for name in per_point:
        columns[name] = np.asarray(ds[name].transpose(*axes).values).reshape(-1)
    keys = columns["task_key"]
    exists = np.array([isinstance(k, str) and k != "" for k in keys], dtype=bool)  # not a hole of the grid
    frame = pd.DataFrame({_column(n): v[exists] for n, v in columns.items()})
    frame.attrs["parameters"] = [_column(a) for a in axes] + _searched(ds, per_point)
    frame.insert(0, "stage", stage)
    frame.insert(1, "op", str(ds.attrs.get("op", (spec.get(stage) or {}).get("op", ""))))
    frame["reused"] = [reused.get(k, False) for k in frame["task_key"]]
    if axes:
        frame = frame.iloc[_sweep_order(stage, [columns[a][exists] for a in axes], axes, spec)]
    return frame.reset_index(drop=True)


def _column(name: str) -> str:
    """The frame's name of a group variable: the frame's own columns keep theirs."""
    return name + _RECORDED if name in ("stage", "op", "reused") else name


def _searched(ds: xr.Dataset, per_point: Sequence[str]) -> list[str]:
    """The searched parameters' columns of a search stage (``param_<name>`` where renamed)."""
    try:
        space = json.loads(ds.attrs.get("search_space", "{}"))
    except (TypeError, ValueError):
        return []
    found = [f"param_{p}" if f"param_{p}" in per_point else p for p in space]
    return [_column(p) for p in found if p in per_point]


def _sweep_order(stage: str, labels: list[np.ndarray], axes: Sequence[str], spec: Mapping[str, Any]) -> np.ndarray:
    """Row positions sorting a stage's points by each axis's place in the spec's sweep list
    (the stage's own, else the first stage that sweeps an axis of that name: an upstream axis);
    values in no list (a search's ``trial``) keep the group's order after those that are."""
    ranks = []
    for axis, values in zip(axes, labels):
        listed = _sweep_values(stage, axis, spec)
        place: dict[Any, int] = {}
        for i, value in enumerate(listed):  # a label is the value, or its JSON text (build's _axis_labeller)
            for label in (value, json.dumps(value, sort_keys=True)):
                if isinstance(label, (bool, int, float, str)):
                    place.setdefault(label, i)
        seen = list(dict.fromkeys(values.tolist()))
        rank = {v: place.get(v, len(listed) + i) for i, v in enumerate(seen)}
        ranks.append([rank[v] for v in values.tolist()])
    return np.lexsort(ranks[::-1])


def _sweep_values(stage: str, axis: str, spec: Mapping[str, Any]) -> list[Any]:
    for name in (stage, *spec):
        st = spec.get(name) or {}
        renamed = st.get("sweep_as") or {}
        for param, values in (st.get("sweep") or {}).items():
            if renamed.get(param, param) == axis and isinstance(values, list):
                return values
    return []


def _recorded_apart(frames: list[pd.DataFrame]) -> list[pd.DataFrame]:
    """A metric named like another stage's sweep axis becomes ``<name>_recorded`` (as a stage
    group does with its own axes), so one column never mixes a swept target (``sparsity``: 0.5)
    with a recorded value (an unswept prune's achieved ``sparsity``)."""
    axes = _parameters(frames)
    out = []
    for f in frames:
        own = f.attrs.get("parameters", [])
        renamed = f.rename(columns={c: c + _RECORDED for c in f.columns if c in axes and c not in own})
        renamed.attrs["parameters"] = own
        out.append(renamed)
    return out


def _parameters(frames: Sequence[pd.DataFrame]) -> set[str]:
    return {c for f in frames for c in f.attrs.get("parameters", ())}


def _columns(frames: Sequence[pd.DataFrame]) -> list[str]:
    """ID columns, every stage's sweep axes and searched parameters (in order of appearance), status,
    the metrics (by name), the cost columns."""
    parameters = list(dict.fromkeys(c for f in frames for c in f.attrs.get("parameters", ())))
    known = {*ID_COLUMNS, "status", *COST_COLUMNS, *parameters}
    metrics = sorted({str(c) for f in frames for c in f.columns} - known)
    tail = [c for c in COST_COLUMNS if any(c in f.columns for f in frames)]
    return [*ID_COLUMNS, *parameters, "status", *metrics, *tail]


def _dtypes(frame: pd.DataFrame, metrics: set[str], flags: set[str]) -> pd.DataFrame:
    """str for the names and status, bool for ``reused``, float for numbers; ``flags`` (boolean
    in every stage that has them) stay booleans, nullable where a stage lacks them."""
    for name in frame.columns:
        col = frame[name]
        values = [v for v in col.tolist() if not _missing(v)]
        if name in flags:
            frame[name] = col.astype(bool if len(values) == len(col) else "boolean")
        elif name in (*metrics, *COST_COLUMNS[:4]) and all(isinstance(v, (int, float, np.number)) for v in values):
            frame[name] = col.astype(float)
        elif values and all(isinstance(v, str) for v in values):
            frame[name] = col.astype(object).where(col.notna(), None)
        else:
            frame[name] = col.infer_objects()
    frame["reused"] = frame["reused"].astype(bool)
    frame.attrs = {}
    return frame


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and np.isnan(value))
