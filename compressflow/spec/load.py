"""Pipeline specs: YAML → validated, frozen data (:mod:`compressflow.spec.schema`), checked
against the registries before any task runs. Every problem becomes one
:class:`~compressflow.errors.SpecError` line that names the field, quotes the bad value and
lists what is valid.

A spec is data from a file anyone may have written, so reading it is bounded: at most
:data:`MAX_SPEC_BYTES` of UTF-8 text, YAML nested at most :data:`MAX_YAML_DEPTH` levels and
expanding to at most :data:`MAX_YAML_NODES` nodes (an alias counts as a copy of what it
names, so an alias bomb is refused before anything is built), no duplicate keys; values are
validated strictly (no coercion of ``true`` to 1 or ``'0.1'`` to 0.1; numbers finite; integers
within 64 bits); stage names are safe identifiers that the results tree does not use for
itself; and the sweeps may expand to at most :data:`MAX_TASKS` tasks, counted before any
task is built.

Loading a spec imports no torch (the registries' modules import it only when an op runs or a
model is built): a typo is refused in well under a second. Checks that must build a model
(an op's ``model_check``, e.g. blockwise layer names) run when the study is submitted
(:func:`check_models`)."""

from __future__ import annotations

import graphlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from compressflow.data.load import check_data
from compressflow.errors import SpecError, did_you_mean
from compressflow.ops.signature import check_numbers, describe_error, field_path, shown, stage_signature
from compressflow.plugins import import_plugins
from compressflow.registries import DATASETS, OPS
from compressflow.spec._yaml import MAX_SPEC_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES, read_yaml
from compressflow.spec.schema import _AXIS_NAME, GROUP_NAMES, DataSpec, EnergySpec, PipelineSpec, SchedulingSpec, StageSpec
from compressflow.spec.located import spec_warnings
from compressflow.spec.search import (LEDGER_OBJECTIVES, MAX_TRIALS, MULTI_FIDELITY, BudgetSpec, DimensionSpec, SearchSpec,
                                      first_configuration)
from compressflow.spec.size import MAX_TASKS, check_size

__all__ = ["MAX_SPEC_BYTES", "MAX_TASKS", "MAX_YAML_DEPTH", "MAX_YAML_NODES", "check_models", "load_spec"]


def load_spec(spec: str | os.PathLike | Mapping[str, Any] | PipelineSpec) -> PipelineSpec:
    """Load and validate a pipeline spec; import its ``plugins`` first.

    Parameters
    ----------
    spec : path, mapping or PipelineSpec
        A YAML file, an already-parsed mapping, or a spec (returned as is).

    Returns
    -------
    PipelineSpec
        Validated against the op, model, dataset and loss registries.

    Raises
    ------
    SpecError
        One line naming the field, the bad value and the valid choices.

    Examples
    --------
    >>> spec = load_spec({"name": "demo", "stages": {"t": {"op": "train", "params": {"epochs": 10}}}})
    >>> spec.order()
    ['t']
    """
    if isinstance(spec, PipelineSpec):
        return spec
    lines: dict[tuple, int] = {}  # where each key is in the spec file, for warnings
    if isinstance(spec, (str, os.PathLike)):
        raw = _read_yaml(Path(spec), lines)
    elif isinstance(spec, Mapping):
        raw = dict(spec)
    else:
        raise SpecError(f"spec: expected a YAML path or a mapping, got {type(spec).__name__}")
    if raw is None:
        raise SpecError(f"spec: {str(spec)!r} is empty; a spec is a mapping of name, data, energy and stages "
                        f"(see tasks/quickstart.yaml)")
    if not isinstance(raw, dict):
        kind = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(
            type(raw), f"a {type(raw).__name__}")
        raise SpecError(f"spec: the top level must be a mapping of name, data, energy and stages, got {kind} "
                        f"({shown(raw)})")
    check_numbers(raw, "", max_depth=MAX_YAML_DEPTH)
    if "plugins" in raw:  # imported first: the stages may use their ops, models and datasets
        base = Path(spec).parent if isinstance(spec, (str, os.PathLike)) else Path.cwd()
        raw["plugins"] = [p.source for p in import_plugins(raw["plugins"], base, field="plugins")]
    try:
        parsed = PipelineSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_first_error(exc)) from None
    _check_stages(parsed, spec if isinstance(spec, (str, os.PathLike)) else None, lines)
    check_size(parsed)
    return parsed


def _read_yaml(path: Path, lines: dict[tuple, int] | None = None) -> Any:
    return read_yaml(path, field="spec", what="a spec", lines=lines)


def _first_error(exc: ValidationError) -> str:
    """The first pydantic error as ``field.path: message (got value)`` on one line."""
    err = exc.errors()[0]
    loc = field_path("", *err["loc"])
    if err["type"] == "extra_forbidden":
        keys = _valid_keys(exc.title, err["loc"])
        key = err["loc"][-1]
        return f"{loc}: unknown key {shown(key)}{did_you_mean(key, keys)}; valid keys: {', '.join(keys)}"
    if err["type"] == "missing":
        return f"{loc}: required field is missing"
    return describe_error(err)


def _valid_keys(model_title: str, loc: tuple) -> list[str]:
    model: type[BaseModel] = {m.__name__: m for m in (PipelineSpec, DataSpec, EnergySpec, StageSpec, SchedulingSpec, SearchSpec, BudgetSpec, DimensionSpec)}.get(
        model_title, PipelineSpec
    )
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if isinstance(part, str) else None
        ann: Any = getattr(field, "annotation", None)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        elif field is not None and getattr(ann, "__args__", None):
            inner = [a for a in ann.__args__ if isinstance(a, type) and issubclass(a, BaseModel)]
            model = inner[0] if inner else model
    return list(model.model_fields)


def _check_stages(spec: PipelineSpec, path: str | os.PathLike | None = None,
                  lines: dict[tuple, int] | None = None) -> None:
    names = list(spec.stages)
    task = DATASETS.info(spec.data.dataset)["task"]
    check_data(**spec.data.options(), locate=False)  # the dataset's own rules, before any stage uses it
    for name, st in spec.stages.items():
        where = f"stages.{name}"
        if st.op not in OPS:
            raise SpecError(f"{where}.op: {OPS.unknown_message(st.op)}")
        sig = stage_signature(st.op)
        for arg, upstream in st.needs.items():
            at = field_path(f"{where}.needs", arg)
            if arg not in sig.artifacts:
                valid = ", ".join(sig.artifacts) or "none (this op takes no upstream stage)"
                raise SpecError(f"{at}: op {st.op!r} has no input {shown(arg)}{did_you_mean(arg, sig.artifacts)}; "
                               f"valid inputs: {valid}")
            if upstream not in spec.stages:
                raise SpecError(f"{at}: no stage named {shown(upstream)}{did_you_mean(upstream, names)}; "
                               f"stages are: {', '.join(names)}")
            if upstream == name:
                raise SpecError(f"{at}: a stage cannot need itself")
        missing = [a for a in sig.required_artifacts if a not in st.needs]
        if missing:
            raise SpecError(
                f"{where}.needs: op {st.op!r} needs an upstream stage for {', '.join(map(repr, missing))}; "
                f"add e.g. needs: {{{missing[0]}: <stage name>}}"
            )
        for axis, values in st.sweep.items():
            at = field_path(f"{where}.sweep", axis)
            if axis not in sig.params:
                raise SpecError(f"{at}: op {st.op!r} has no parameter {shown(axis)}"
                              f"{did_you_mean(axis, sig.params)}; valid: {', '.join(sig.params)}")
            if not values:
                raise SpecError(f"{at}: the sweep is empty; give at least one value")
            if axis in st.params:
                raise SpecError(f"{at}: {axis!r} is both in params and in sweep; keep one")
        for param, axis in st.sweep_as.items():
            at = field_path(f"{where}.sweep", param)
            if param not in st.sweep:
                raise SpecError(f"{where}.sweep_as.{param}: {param!r} is not swept; sweep axes: {', '.join(st.sweep) or 'none'}")
            if not isinstance(axis, str) or not _AXIS_NAME.fullmatch(axis):
                raise SpecError(f"{at}.as: {shown(axis)} is not an axis name; use letters, digits and _")
            if axis in GROUP_NAMES:
                raise SpecError(f"{at}.as: {axis!r} is a variable every stage group of the results holds "
                                f"({', '.join(GROUP_NAMES)}); choose another name")
            if axis != param and axis in sig.params:
                raise SpecError(f"{at}.as: {axis!r} is another parameter of op {st.op!r}; choose a name that is "
                                f"not one of: {', '.join(sig.params)}")
            if [st.axis(p) for p in st.sweep].count(axis) > 1:
                raise SpecError(f"{at}.as: two of this stage's sweep axes would be named {axis!r}; rename one")
        check_search(spec, name)
        first_point = {axis: values[0] for axis, values in st.sweep.items()}  # a swept param may be required
        first_point.update(first_configuration(st.search))  # and so may a searched one
        try:
            sig.validate({**st.params, **first_point}, where=f"{where}.params")
        except SpecError as exc:  # a bad first sweep value is named as a sweep value
            msg = str(exc)
            for axis in st.sweep:
                msg = msg.replace(f"{where}.params.{axis}:", f"{where}.sweep.{axis}:", 1)
            raise SpecError(msg) from None
        for axis, values in st.sweep.items():
            seen: dict[Any, int] = {}  # each value as validated (1 and 1.0 of a float are one) -> its index
            for i, value in enumerate(values):
                valid = sig.validate({**st.params, **first_point, axis: value}, where=f"{where}.sweep")[axis]
                first = seen.setdefault(_comparable(valid), i)
                if first != i:  # the results' coordinate would hold it twice (.sel would return two rows)
                    raise SpecError(f"{field_path(f'{where}.sweep', axis)}: duplicate value {shown(value)} "
                                    f"({shown(values[first])} and {shown(value)} are equal); each sweep value "
                                    f"must be distinct")
        key_by = st.scheduling.key_by
        if key_by is not None and key_by not in st.axes():
            raise SpecError(f"{where}.scheduling.key_by: {shown(key_by)} is not a sweep axis of this stage; "
                            f"sweep axes: {', '.join(st.axes()) or 'none'}")
        for resource, amount in st.resources.items():
            if not amount > 0:  # Dask waits forever for a worker offering 0, a negative or NaN amount
                raise SpecError(f"{field_path(f'{where}.resources', resource)}: must be > 0 (got {amount!r})")
        needs_data = OPS.info(st.op)["data"]
        if needs_data is not None and needs_data != task:
            raise SpecError(f"{where}.op: op {st.op!r} needs a {needs_data} dataset, but data.dataset "
                            f"{spec.data.dataset!r} is a {task} dataset; {needs_data} datasets: "
                            f"{', '.join(DATASETS.list(task=needs_data))}")
    try:
        spec.order()
    except graphlib.CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        raise SpecError(f"stages: dependency cycle {cycle}; remove one of these needs") from None
    for name, st in spec.stages.items():  # an op's own cross-stage checks (they see only the spec)
        with spec_warnings(path, (lines or {}).get(("stages", name))):  # shown at the stage's line of the spec
            OPS.check(st.op)(spec, name)


def check_models(spec: PipelineSpec) -> None:
    """Run every stage's ``model_check`` (:class:`~compressflow._registry.OpRegistry`): the checks
    that build a model (on the meta device: names only, no memory) to refuse, e.g., a layer
    name the model does not have. Called when a study is submitted, before any task runs;
    they import torch, which :func:`load_spec` does not.

    Raises
    ------
    SpecError
        One line naming the field, the bad value and the valid choices.
    """
    for name, st in spec.stages.items():
        OPS.model_check(st.op)(spec, name)


def check_search(spec: PipelineSpec, name: str) -> None:
    """The checks of ``stages.<name>.search`` that need the op and the other stages."""
    st = spec.stages[name]
    search = st.search
    if search is None:
        return
    where = f"stages.{name}.search"
    sig = stage_signature(st.op)
    for param in search.space:
        at = field_path(f"{where}.space", param)
        if param not in sig.params:
            raise SpecError(f"{at}: op {st.op!r} has no parameter {shown(param)}"
                              f"{did_you_mean(param, sig.params)}; valid: {', '.join(sig.params)}")
        if param in st.params or param in st.sweep:
            raise SpecError(f"{at}: {param!r} is also in {'params' if param in st.params else 'sweep'}; keep one")
    multi = search.objectives is not None
    if multi and search.strategy in MULTI_FIDELITY:
        raise SpecError(f"{where}.objectives: strategy {search.strategy!r} stops trials on one metric; for several "
                        f"objectives use one of grid, random, tpe, nsga2")
    if search.strategy == "nsga2" and not multi:
        raise SpecError(f"{where}.strategy: 'nsga2' is a multi-objective strategy; give objectives: "
                        f"[val_accuracy:max, co2_g:min] or use tpe")
    if search.strategy in MULTI_FIDELITY and search.budget is None:
        raise SpecError(f"{where}.budget: strategy {search.strategy!r} needs a budget, e.g. "
                        f"budget: {{resource: epochs, min: 2, max: 30, reduction_factor: 3}}")
    if search.budget is not None:
        resource = search.budget.resource
        at = f"{where}.budget.resource"
        if resource not in sig.params:
            raise SpecError(f"{at}: op {st.op!r} has no parameter {shown(resource)}"
                              f"{did_you_mean(resource, sig.params)}; valid: {', '.join(sig.params)}")
        if resource in search.space or resource in st.sweep or resource in st.params:
            raise SpecError(f"{at}: {resource!r} is set by the budget; remove it from space, sweep and params")
    if search.sampler is not None and search.strategy not in MULTI_FIDELITY:
        raise SpecError(f"{where}.sampler: strategy {search.strategy!r} is its own sampler; sampler is for "
                        f"{', '.join(MULTI_FIDELITY)} (random, tpe or grid); remove it")
    if search.strategy == "successive_halving" and search.sampler == "tpe":
        raise SpecError(f"{where}.sampler: successive_halving asks every trial before any has finished, so 'tpe' "
                        f"has nothing to learn from; use random or grid, or strategy asha or hyperband")
    if search.proposer() == "grid":
        for param, dim in search.space.items():
            if dim.grid() is None:
                raise SpecError(f"{field_path(f'{where}.space', param)}: a float range has no grid; give choices: "
                                f"[...] or an integer range, or use random or tpe")
    elif search.trials is None:
        raise SpecError(f"{where}.trials: strategy {search.strategy!r} needs trials: N (how many configurations)")
    if search.n_trials() > MAX_TRIALS:
        raise SpecError(f"{where}.space: the grid has {search.n_trials():,} points, more than {MAX_TRIALS:,}; give "
                        f"fewer choices or trials: N with random or tpe")
    for metric, _ in search.directions():
        if metric in LEDGER_OBJECTIVES:
            continue
        if not metric.replace("_", "").isalnum():
            raise SpecError(f"{where}.metric: {metric!r} is not a metric name")
    needed_by = [other for other, o in spec.stages.items() if name in o.needs.values()]
    if needed_by:
        raise SpecError(f"stages.{needed_by[0]}.needs: stage {name!r} is a search; no stage can take its output "
                        f"(yet); run the best configuration it reports as a stage of its own")
    # every end of every dimension must be valid for the op (e.g. within a parameter's bounds)
    base = {**st.params, **{a: v[0] for a, v in st.sweep.items()}, **first_configuration(search)}
    for param, dim in search.space.items():
        for value in dim.choices if dim.choices is not None else (dim.low, dim.high):
            sig.validate({**base, param: value}, where=f"{where}.space")


def _comparable(value: Any) -> Any:
    """``value`` as a dict key that equal values share: itself when hashable, else its JSON."""
    try:
        hash(value)
    except TypeError:
        return ("json", json.dumps(value, sort_keys=True, default=repr))
    return ("value", value)
