"""Spec-time checks of blockwise layer names. The model a blockwise stage works on is known
from the spec (its upstream stage's ``model`` and ``width``), so an unknown layer, a model
with no replaceable layer, or a layer its activation cache does not hold fails before any
task runs, with the valid names in the message."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from compressflow.errors import SpecError
from compressflow.nn.models import build_model
from compressflow.nn.surgery import replaceable_layers
from compressflow.ops.signature import stage_signature

if TYPE_CHECKING:
    from compressflow.engine.spec import PipelineSpec

__all__ = ["check_blockwise_layers", "check_module_names"]


def check_blockwise_layers(spec: PipelineSpec, name: str) -> None:
    """Check the ``layer``/``layers``/``exclude`` values of stage ``name`` against the
    replaceable layers of the model it works on (skipped when that model is not fixed in the
    spec, e.g. a swept ``model``: the task then checks at run time)."""
    st = spec.stages[name]
    arg = "model" if "model" in st.needs else "teacher"
    arch = _architecture(spec, st.needs.get(arg))
    if arch is None:
        return
    model, found = arch
    where = f"stages.{name}"
    if not found:
        raise SpecError(f"{where}.needs.{arg}: model {model!r} has no replaceable layer (a conv with kernel > 1x1 "
                        f"and groups = 1); blockwise ops need a convolutional teacher")
    chosen = _chosen(st.params, found, where, model)
    for value, field in _layer_values(st):
        if value not in found:
            raise SpecError(f"{where}.{field}: {value!r} is not a replaceable layer of {model}; valid: {', '.join(found)}")
        cache = st.needs.get("activations")
        if cache is not None:
            cached = _chosen(spec.stages[cache].params, found, f"stages.{cache}", model)
            if value not in cached:
                raise SpecError(f"{where}.{field}: {value!r} is not in the activation cache of stage {cache!r} "
                                f"(it holds: {', '.join(cached)}); add it to that stage's layers")
    if not chosen:
        raise SpecError(f"{where}.params: layers/exclude leave no layer of {model} to replace; keep at least one")


def check_module_names(spec: PipelineSpec, name: str) -> None:
    """Check a stage's ``layers`` against the module names of its ``model`` input (any
    module may be named, e.g. ``layer2`` or ``fc``)."""
    st = spec.stages[name]
    net = _build(spec, st.needs.get("model"))
    if net is None:
        return
    model, modules = net[0], [n for n, _ in net[1].named_modules() if n]
    bad = [n for n in st.params.get("layers") or () if n not in modules]
    if bad:
        raise SpecError(f"stages.{name}.params.layers: {bad[0]!r} is not a module of {model}; "
                        f"e.g. {', '.join(modules[:8])}, ...")


def _architecture(spec: PipelineSpec, stage: str | None) -> tuple[str, list[str]] | None:
    """``(model name, replaceable layer names)`` of the model stage ``stage`` produces, when
    its op takes a fixed ``model`` parameter."""
    built = _build(spec, stage)
    return None if built is None else (built[0], replaceable_layers(built[1]))


def _build(spec: PipelineSpec, stage: str | None) -> tuple[str, torch.nn.Module] | None:
    """The model stage ``stage`` produces, built on the meta device (names only), when its op
    takes a fixed ``model`` parameter."""
    if stage is None:
        return None
    st = spec.stages[stage]
    sig = stage_signature(st.op)
    if "model" not in sig.params or "model" in st.sweep or "width" in st.sweep:
        return None
    params = sig.validate({**st.params, **{axis: values[0] for axis, values in st.sweep.items()}}, where=f"stages.{stage}.params")
    with torch.device("meta"):  # names only: no memory, no initialisation cost
        net = build_model(params["model"], **_model_kwargs(params, spec))
    return params["model"], net


def _model_kwargs(params: dict[str, Any], spec: PipelineSpec) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"in_channels": spec.data.channels or 3}
    if "width" in params:
        kwargs["width"] = params["width"]
    return kwargs


def _chosen(params: dict[str, Any], found: list[str], where: str, model: str) -> list[str]:
    include, exclude = params.get("layers"), params.get("exclude") or ()
    for field, names in (("layers", include or ()), ("exclude", exclude)):
        bad = [n for n in names if n not in found]
        if bad:
            raise SpecError(f"{where}.params.{field}: {bad[0]!r} is not a replaceable layer of {model}; "
                            f"valid: {', '.join(found)}")
    return [n for n in found if (include is None or n in include) and n not in exclude]


def _layer_values(st) -> list[tuple[Any, str]]:
    if "layer" in st.sweep:
        return [(v, "sweep.layer") for v in st.sweep["layer"]]
    if "layer" in st.params:
        return [(st.params["layer"], "params.layer")]
    return []
