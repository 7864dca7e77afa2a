"""Representation comparisons (SVCCA: Raghu et al. 2017, "SVCCA: Singular Vector Canonical
Correlation Analysis for Deep Learning Dynamics and Interpretability"; linear CKA: Kornblith
et al. 2019, "Similarity of Neural Network Representations Revisited"), as two ops:

* ``capture`` — run a model over a fixed probe set (the first ``probe`` images of a split:
  the same images in the same order for every model of the pipeline) and store chosen
  layers' outputs in Zarr, with the model's and the probe's hashes.
* ``svcca`` — compare two captures layer by layer (or every layer with every layer): SVCCA
  similarity and distance, and linear CKA. Each comparison is its own task and reads only
  the stores. (The Python function is :func:`compare_representations`, so that it does not
  shadow :func:`compressflow.metrics.similarity.svcca`; specs name the op ``svcca``.)
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from compressflow.errors import InputError, SpecError
from compressflow.ops import (Artifact, OpContext, PositiveInt, Record, check_module_names, load_checkpoint,
                              stage_params, zarr_record)
from compressflow.registries import OPS

__all__ = ["capture", "compare_representations"]


@OPS.register(model_check=check_module_names)
def capture(ctx: OpContext, *, model: Artifact, layers: tuple[str, ...] | None = None, probe: PositiveInt = 500,
            split: Literal["test", "val", "train"] = "test") -> Record:
    """Store ``layers``' outputs (default: every replaceable conv) of ``model`` on the probe set.

    Returns
    -------
    Record
        ``probe_size``, ``store_bytes``; artifact: the Zarr store (``kind="zarr"``) whose
        attributes hold ``model_sha256``, ``probe_sha256``, ``probe_size`` and ``probe_split``.
    """
    from compressflow.data.activations import write_activations
    from compressflow.nn.surgery import replaceable_layers

    splits = ctx.splits()
    net = load_checkpoint(model, ctx.device).eval()
    names = list(layers) if layers else replaceable_layers(net)
    for name in names:
        try:
            net.get_submodule(name)
        except AttributeError:
            raise InputError(f"capture.layers: {name!r} is not a module of {model.meta.get('model')}") from None
    x = getattr(splits, split).x[:probe]
    probe_hash = hashlib.sha256(x.numpy().tobytes()).hexdigest()
    path = write_activations(net, {split: x}, names, ctx.artifact_path(".zarr"), kinds=("out",),
                             attrs={"model_sha256": model.sha256, "probe_sha256": probe_hash, "probe_size": len(x),
                                    "probe_split": split})
    return zarr_record(path, {"layers": names, "probe_sha256": probe_hash}, probe_size=len(x))


def _same_probe(spec, name: str) -> None:
    """Both inputs of an ``svcca`` stage must be captures of the same probe (size and split)."""
    st = spec.stages[name]
    probes = {}
    for arg in ("a", "b"):
        up = spec.stages[st.needs[arg]]
        if up.op != "capture":
            raise SpecError(f"stages.{name}.needs.{arg}: stage {st.needs[arg]!r} is a {up.op!r} stage; "
                            f"svcca compares 'capture' stages")
        params = stage_params(spec, st.needs[arg])
        probes[arg] = (params["probe"], params["split"])
    if probes["a"] != probes["b"]:
        raise SpecError(f"stages.{name}.needs: a and b capture different probe sets (probe {probes['a'][0]} of "
                        f"{probes['a'][1]} vs probe {probes['b'][0]} of {probes['b'][1]}); give both captures the "
                        f"same probe and split")


@OPS.register(name="svcca", check=_same_probe)
def compare_representations(ctx: OpContext, *, a: Artifact, b: Artifact, layers: tuple[str, ...] | None = None,
                            keep: Annotated[float, Field(gt=0)] = 20, conv: Literal["pool", "fold"] = "pool",
                            cross: bool = False) -> Record:
    """The ``svcca`` op: compare the captures ``a`` and ``b`` per layer.

    Parameters
    ----------
    a, b : Artifact
        ``capture`` stores of two models on the same probe set.
    layers : tuple of str, optional
        Layers to compare (default: every layer both stores hold).
    keep : float
        SVD directions kept (20), or a variance fraction in (0, 1).
    conv : {"pool", "fold"}
        Conv maps average-pooled over H×W, or H×W folded into the datapoints.
    cross : bool
        Also compare every layer of ``a`` with every layer of ``b`` (``svcca_cross``,
        dims ``layer_a`` × ``layer_b``).

    Returns
    -------
    Record
        ``svcca`` and ``cka`` (dim ``layer``), ``svcca_distance`` = 1 − ``svcca``, their
        means ``svcca_mean``/``cka_mean``, and ``svcca_cross`` when asked.

    Raises
    ------
    InputError
        Captures of different probe sets (or lengths), or a layer a store lacks.
    """
    import xarray as xr

    from compressflow.data.activations import read_output
    from compressflow.metrics.similarity import as_matrix, linear_cka, svcca

    ia, ib = _capture_info(a, "a"), _capture_info(b, "b")
    if (ia["probe_sha256"], ia["probe_size"]) != (ib["probe_sha256"], ib["probe_size"]):
        raise InputError(f"svcca: a and b were captured on different probe sets ({ia['probe_size']} "
                         f"{ia['probe_split']} images vs {ib['probe_size']} {ib['probe_split']}); capture both "
                         f"with the same probe and split")
    common = [n for n in ia["layers"] if n in ib["layers"]]
    names = list(layers) if layers else common
    split = ia["probe_split"]

    def acts(store: Artifact, layer: str) -> np.ndarray:
        return as_matrix(read_output(store.path, layer, split)[:], conv)

    sim, cka = [], []
    for layer in names:
        x, y = acts(a, layer), acts(b, layer)
        sim.append(svcca(x, y, keep)[0])
        cka.append(linear_cka(x, y))
        ctx.progress(layer=layer, svcca=sim[-1], cka=cka[-1])
    sim_a = np.array(sim)
    metrics = xr.Dataset(
        {"svcca": ("layer", sim_a), "svcca_distance": ("layer", 1 - sim_a), "cka": ("layer", np.array(cka)),
         "svcca_mean": float(sim_a.mean()), "cka_mean": float(np.mean(cka))},
        coords={"layer": names},
    )
    if cross:
        la, lb = ia["layers"], ib["layers"]
        mats = {n: acts(a, n) for n in la}, {n: acts(b, n) for n in lb}
        grid = np.array([[svcca(mats[0][p], mats[1][q], keep)[0] for q in lb] for p in la])
        metrics["svcca_cross"] = xr.DataArray(grid, dims=("layer_a", "layer_b"), coords={"layer_a": la, "layer_b": lb})
    return Record(metrics)


def _capture_info(store: Artifact, arg: str) -> dict:
    """A capture store's attributes, checked to be what ``capture`` writes (one line naming the store otherwise)."""
    from compressflow.data.activations import store_info

    info = store_info(store.path)
    kinds = {"probe_sha256": str, "probe_size": int, "probe_split": str}
    for key, kind in kinds.items():
        if not isinstance(info.get(key), kind):
            raise InputError(f"svcca.{arg}: {store.path!r} is not a capture store (its attributes have no "
                             f"{kind.__name__} {key!r}); compare the outputs of 'capture' stages")
    return info
