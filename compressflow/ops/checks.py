"""Writing an op's checks: what a check sees of the spec (:class:`SpecView`), the validated
parameters of a stage (:func:`stage_params`), and the checks several built-in ops share.

A check is ``check(spec, stage_name)``, registered with the op
(``@OPS.register(check=..., model_check=...)``). A ``check`` runs when the spec is loaded and
reads only the spec (no torch); a ``model_check`` runs when the study is submitted, before any
task, and may build the model a stage works on (:func:`stage_model`, on the meta device) to
check, e.g., layer names: blockwise layer names are checked so, so an unknown layer, a model
with no replaceable layer, or a layer the activation cache does not hold fails before any task
runs, with the valid names in the message."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from compressflow.errors import SpecError
from compressflow.ops.signature import stage_signature

if TYPE_CHECKING:
    import torch

__all__ = ["SpecView", "StageView", "check_module_names", "check_replaceable_layers", "stage_model", "stage_params"]


class StageView(Protocol):
    """What a check reads of a stage (a :class:`compressflow.spec.StageSpec`)."""

    @property
    def op(self) -> str: ...
    @property
    def params(self) -> Mapping[str, Any]: ...
    @property
    def needs(self) -> Mapping[str, str]: ...
    @property
    def sweep(self) -> Mapping[str, Sequence[Any]]: ...


class DataView(Protocol):
    """What a check reads of the data block (a :class:`compressflow.spec.DataSpec`)."""

    @property
    def dataset(self) -> str: ...
    @property
    def channels(self) -> int | None: ...


class SpecView(Protocol):
    """What a check reads of the spec (a :class:`compressflow.spec.PipelineSpec`): its name,
    data block and stages by name."""

    @property
    def name(self) -> str: ...
    @property
    def data(self) -> DataView: ...
    @property
    def stages(self) -> Mapping[str, StageView]: ...


def stage_params(spec: SpecView, stage: str) -> dict[str, Any]:
    """The validated parameters of ``stage`` (defaults filled in) at its first sweep point."""
    st = spec.stages[stage]
    first = {axis: values[0] for axis, values in st.sweep.items()}
    return stage_signature(st.op).validate({**st.params, **first}, where=f"stages.{stage}.params")


def stage_model(spec: SpecView, stage: str | None) -> tuple[str, torch.nn.Module] | None:
    """``(model name, model)`` of the model stage ``stage`` produces, built on the meta device
    (names and shapes only: no memory, no initialisation cost), when its op takes a fixed
    ``model`` parameter (None for no stage, or a swept ``model`` or ``width``: the task then
    checks at run time). For ``model_check``\\ s: it imports torch."""
    import torch

    from compressflow.nn.models import build_model

    if stage is None:
        return None
    st = spec.stages[stage]
    sig = stage_signature(st.op)
    if "model" not in sig.params or "model" in st.sweep or "width" in st.sweep:
        return None
    params = stage_params(spec, stage)
    kwargs: dict[str, Any] = {"in_channels": spec.data.channels or 3}
    if "width" in params:
        kwargs["width"] = params["width"]
    with torch.device("meta"):
        net = build_model(params["model"], **kwargs)
    return params["model"], net


def check_replaceable_layers(spec: SpecView, name: str) -> None:
    """Check the ``layer``/``layers``/``exclude`` values of stage ``name`` against the
    replaceable layers of the model it works on (its ``model`` or ``teacher`` input; skipped
    when that model is not fixed in the spec, e.g. a swept ``model``: the task then checks at
    run time). A ``model_check``."""
    from compressflow.nn.surgery import replaceable_layers

    st = spec.stages[name]
    arg = "model" if "model" in st.needs else "teacher"
    built = stage_model(spec, st.needs.get(arg))
    if built is None:
        return
    model, found = built[0], replaceable_layers(built[1])
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


def check_module_names(spec: SpecView, name: str) -> None:
    """Check a stage's ``layers`` against the module names of its ``model`` input (any
    module may be named, e.g. ``layer2`` or ``fc``). A ``model_check``."""
    st = spec.stages[name]
    built = stage_model(spec, st.needs.get("model"))
    if built is None:
        return
    model, modules = built[0], [n for n, _ in built[1].named_modules() if n]
    bad = [n for n in st.params.get("layers") or () if n not in modules]
    if bad:
        raise SpecError(f"stages.{name}.params.layers: {bad[0]!r} is not a module of {model}; "
                        f"e.g. {', '.join(modules[:8])}, ...")


def _chosen(params: Mapping[str, Any], found: list[str], where: str, model: str) -> list[str]:
    include, exclude = params.get("layers"), params.get("exclude") or ()
    for field, names in (("layers", include or ()), ("exclude", exclude)):
        bad = [n for n in names if n not in found]
        if bad:
            raise SpecError(f"{where}.params.{field}: {bad[0]!r} is not a replaceable layer of {model}; "
                            f"valid: {', '.join(found)}")
    return [n for n in found if (include is None or n in include) and n not in exclude]


def _layer_values(st: StageView) -> list[tuple[Any, str]]:
    if "layer" in st.sweep:
        return [(v, "sweep.layer") for v in st.sweep["layer"]]
    if "layer" in st.params:
        return [(st.params["layer"], "params.layer")]
    return []
