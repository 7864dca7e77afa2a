"""Results trees built by hand (no run): a ledger plus the stage groups a report reads, for
the stages named, so report sections can be tested in milliseconds."""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from compressflow import load_spec
from compressflow.results.kd_comparison import kd_comparison

T0 = np.datetime64("2026-01-01T00:00:00", "ns")
STUDENT = {"model": "mobilenet_v2", "width": 0.25, "epochs": 10}


def _stage(op: str, data: dict, coords: dict, keys: np.ndarray, energy: float) -> xr.Dataset:
    dims = tuple(coords)
    ds = xr.Dataset({k: (dims, v) for k, v in data.items()}, coords=coords)
    ds["task_key"] = (dims, keys.reshape([len(c) for c in coords.values()]))
    ds["energy_kwh"] = (dims, np.full(keys.shape, energy).reshape(ds["task_key"].shape))
    ds["co2_g"] = ds["energy_kwh"] * 400.0
    ds["duration_s"] = xr.full_like(ds["energy_kwh"], 3.0)
    ds.attrs.update({"op": op, "params": "{}", "needs": "{}", "sweep_axes": list(dims)})
    return ds


def results_tree(*stages: str) -> xr.DataTree:
    """A tree with any of the stages ``teacher`` (train, 2 seeds, energy curves), ``grid`` and
    ``stoch`` (distill; both give a ``kd_comparison`` group), ``pruned`` (prune over method ×
    sparsity × seed) and ``similarity`` (svcca over method × sparsity × seed × layer)."""
    rng = np.random.default_rng(0)
    groups: dict[str, xr.Dataset] = {}
    ledger: list[tuple[str, str, str]] = []  # (task key, stage, op)

    def keys(stage: str, op: str, n: int) -> np.ndarray:
        out = np.array([f"{op}-{stage}{i}" for i in range(n)], dtype=object)
        ledger.extend((k, stage, op) for k in out)
        return out

    if "teacher" in stages:
        k = keys("teacher", "train", 2)
        ds = _stage("train", {"accuracy": [0.9, 0.92], "val_accuracy": [0.88, 0.9], "train_flops": [1e9, 1e9]},
                    {"seed": [0, 1]}, k, 2e-4)
        ds["energy_curve_kwh"] = (("seed", "epoch"), [[1e-4, 2e-4], [1.1e-4, 2.1e-4]])
        ds["elapsed_curve_s"] = (("seed", "epoch"), [[1.0, 2.0], [1.2, 2.3]])
        groups["teacher"] = ds.assign_coords(epoch=[1, 2])
    spec_stages = {"teacher": {"op": "train", "params": {"epochs": 10}}}
    if "grid" in stages:
        k = keys("grid", "distill", 6)
        groups["grid"] = _stage("distill", {"accuracy": rng.uniform(0.6, 0.8, (3, 2)),
                                            "val_accuracy": rng.uniform(0.6, 0.8, (3, 2)),
                                            "train_flops": np.full((3, 2), 5e8)},
                                {"temperature": [2, 4, 8], "seed": [0, 1]}, k, 1e-4)
        spec_stages["grid"] = {"op": "distill", "needs": {"teacher": "teacher"}, "params": STUDENT,
                               "sweep": {"temperature": [2, 4, 8], "seed": [0, 1]}}
    if "stoch" in stages:
        k = keys("stoch", "distill", 2)
        groups["stoch"] = _stage("distill", {"accuracy": [0.75, 0.77], "val_accuracy": [0.74, 0.76],
                                             "train_flops": [5e8, 5e8]}, {"seed": [0, 1]}, k, 1.1e-4)
        spec_stages["stoch"] = {"op": "distill", "needs": {"teacher": "teacher"},
                                "params": {**STUDENT, "temperature": {"stochastic": [2, 8]}}, "sweep": {"seed": [0, 1]}}
    prune_coords = {"method": ["magnitude", "random"], "sparsity": [0.25, 0.5], "seed": [0, 1]}
    if "pruned" in stages:
        k = keys("pruned", "prune", 8)
        ds = _stage("prune", {"accuracy": rng.uniform(0.5, 0.9, (2, 2, 2))}, prune_coords, k, 5e-5)
        ds["original_accuracy"] = 0.91
        groups["pruned"] = ds
    if "similarity" in stages:
        k = keys("similarity", "svcca", 8)
        ds = _stage("svcca", {}, prune_coords, k, 1e-5)
        ds["svcca"] = (("method", "sparsity", "seed", "layer"), rng.uniform(0.5, 1.0, (2, 2, 2, 3)))
        groups["similarity"] = ds.assign_coords(layer=["conv1", "layer1", "layer2"])
    n = len(ledger)
    start = T0 + (np.arange(n) * 2e9).astype("timedelta64[ns]")
    kwh = np.linspace(1e-5, 2e-4, n)
    tasks = xr.Dataset(
        {"stage": ("task", [s for _, s, _ in ledger]), "op": ("task", [o for _, _, o in ledger]),
         "worker": ("task", [f"tcp://127.0.0.1:{4000 + i % 2}" for i in range(n)]), "status": ("task", ["ok"] * n),
         "error": ("task", [""] * n), "point": ("task", ["{}"] * n), "start": ("task", start),
         "end": ("task", start + np.timedelta64(3, "s")), "duration_s": ("task", np.full(n, 3.0)),
         "energy_kwh": ("task", kwh), "cpu_kwh": ("task", kwh / 2), "gpu_kwh": ("task", kwh / 4),
         "ram_kwh": ("task", kwh / 4), "co2_g": ("task", kwh * 400.0)},
        coords={"task": [k for k, _, _ in ledger]})
    tree_groups = {"/tasks": tasks, **{f"/{name}": ds for name, ds in groups.items()}}
    if "grid" in stages and "stoch" in stages:
        spec = load_spec({"name": "synthetic", "data": {"dataset": "digits"}, "stages": spec_stages})
        tree_groups.update(kd_comparison(spec, {f"/{k}": v for k, v in groups.items()}))
    tree = xr.DataTree.from_dict(tree_groups)
    tree.attrs.update({"name": "synthetic", "spec": json.dumps({})})
    return tree
