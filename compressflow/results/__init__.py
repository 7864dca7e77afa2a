"""Task records → one labelled :class:`xarray.DataTree`, written to Zarr.

Layout: ``/tasks`` is the ledger (dimension ``task``, one entry per task); ``/<stage>`` holds
that stage's metrics with its sweep axes as dimensions. Every variable has ``units`` in its
attrs. The store opens with plain ``xarray.open_datatree(path, engine="zarr")``.

A recorded variable (or dimension) whose name is also a dimension of its stage group (a sweep
axis: e.g. ``prune``'s achieved ``sparsity`` when ``sparsity`` is swept), or one of the names
the group adds from the ledger (``status``, ``duration_s``, ``energy_kwh``, ``co2_g``,
``task_key``), is kept as ``<name>_recorded`` with ``attrs["recorded_name"] = <name>``; the
group's ``attrs["renamed"]`` (JSON) maps every renamed variable back to its recorded name.

:func:`to_dataframe` flattens a tree into one table: a row per task or sweep point of every
stage, its scalar metrics and its cost."""

from __future__ import annotations

from typing import TYPE_CHECKING

import lazy_loader as lazy

if TYPE_CHECKING:
    from compressflow.results.build import LEDGER_GROUP, RECORDED_SUFFIX, STAGE_LEDGER, build_results
    from compressflow.results.store import STORE_MARKER, check_results_store, open_results, save_results
    from compressflow.results.table import to_dataframe

# opening results needs the store only (xarray, no engine, no torch, no Dask)
__getattr__, __dir__, __all__ = lazy.attach(__name__, submod_attrs={
    "build": ["LEDGER_GROUP", "RECORDED_SUFFIX", "STAGE_LEDGER", "build_results"],
    "store": ["STORE_MARKER", "check_results_store", "open_results", "save_results"],
    "table": ["to_dataframe"],
})
