"""Pipeline specs: YAML → validated, frozen data, checked against the registries before any
task runs. Every problem becomes one :class:`~compressflow.errors.SpecError` line that names
the field, quotes the bad value and lists what is valid.

A spec is data from a file anyone may have written, so reading it is bounded: at most
:data:`MAX_SPEC_BYTES` of UTF-8 text, YAML nested at most :data:`MAX_YAML_DEPTH` levels and
expanding to at most :data:`MAX_YAML_NODES` nodes (an alias counts as a copy of what it
names, so an alias bomb is refused before anything is built), no duplicate keys; values are
validated strictly (no coercion of ``true`` to 1 or ``'0.1'`` to 0.1; numbers finite; integers
within 64 bits); stage names are safe identifiers that the results tree does not use for
itself; and the sweeps may expand to at most :data:`MAX_TASKS` tasks, counted before any
task is built."""

from __future__ import annotations

import graphlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from compressflow.engine._yaml import MAX_SPEC_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES, read_yaml
from compressflow.engine.search_spec import BudgetSpec, DimensionSpec, SearchSpec, check_search, first_configuration
from compressflow.engine.spec_size import MAX_TASKS, check_size, task_counts
from compressflow.errors import SpecError
from compressflow.plugins import import_plugins
from compressflow.registries import DATASETS, OPS, SUMMARIES
from compressflow.ops.signature import (Seed, check_numbers, describe_error, field_path, shown, stage_signature,
                                            yaml_tuples)

__all__ = ["MAX_SPEC_BYTES", "MAX_STAGE_NAME", "MAX_TASKS", "MAX_YAML_DEPTH", "MAX_YAML_NODES", "DataSpec", "EnergySpec",
           "PipelineSpec", "SchedulingSpec", "StageSpec", "load_spec", "one_line", "reserved_stage_names", "task_counts"]

#: the longest stage name: it becomes a Zarr group, a DataTree key and part of file names
MAX_STAGE_NAME = 64

_STRICT = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
_STAGE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_NAME_RULE = f"use letters, digits, _ and - (start with a letter or _), at most {MAX_STAGE_NAME} characters"


class DataSpec(BaseModel):
    """Which dataset every stage of the pipeline uses (see :func:`compressflow.data.load_splits`)."""

    model_config = _STRICT
    dataset: str = "digits"
    image_size: int | None = Field(default=None, ge=4, le=512)
    channels: int | None = None
    val_fraction: float = Field(default=0.15, gt=0, lt=1)
    test_fraction: float = Field(default=0.2, gt=0, lt=1)
    seed: Seed = 0
    root: str | None = None
    augment: yaml_tuples(tuple[str, ...] | None) = None  # type: ignore[valid-type]  # built at runtime for pydantic
    num_samples: int = Field(default=1000, ge=20, le=10_000_000)
    num_classes: int = Field(default=10, ge=2, le=100_000)

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        if v not in DATASETS:
            raise ValueError(DATASETS.unknown_message(v))
        return v

    @field_validator("augment")
    @classmethod
    def _known_augmentations(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        from compressflow.data import AUGMENT_OPS

        for op in v or ():
            if op not in AUGMENT_OPS:
                raise ValueError(f"unknown augmentation {op!r}; valid choices: {', '.join(AUGMENT_OPS)}")
        return v

    @field_validator("channels")
    @classmethod
    def _channels(cls, v: int | None) -> int | None:
        if v not in (None, 1, 3):
            raise ValueError(f"channels must be 1 or 3, got {v!r}")
        return v

    @field_validator("root")
    @classmethod
    def _expand_root(cls, v: str | None) -> str | None:
        return None if v is None else os.path.abspath(os.path.expanduser(v))

    def options(self) -> dict[str, Any]:
        """Keyword arguments for :func:`compressflow.data.load_splits`."""
        return self.model_dump()


class EnergySpec(BaseModel):
    """Carbon accounting: CO₂ (g) = kWh × ``pue`` × intensity of ``country`` (ISO 3166 alpha-3)."""

    model_config = _STRICT
    country: str = "USA"
    region: str | None = None
    pue: float = Field(default=1.0, ge=1.0, le=3.0)

    @field_validator("country")
    @classmethod
    def _known_country(cls, v: str) -> str:
        from compressflow.energy import carbon_intensity

        carbon_intensity(v)  # raises InputError with valid codes
        return v


class SchedulingSpec(BaseModel):
    """How a stage's tasks are placed on workers: ``work_stealing`` (Dask's dynamic
    scheduler), ``round_robin`` (cyclic) or ``bin_packing`` (worst-fit decreasing on task
    durations read from the run directory ``durations_from``, keyed by the sweep axis
    ``key_by``; equal durations when there is no earlier run)."""

    model_config = _STRICT
    policy: Literal["work_stealing", "round_robin", "bin_packing"] = "work_stealing"
    durations_from: str | None = None
    key_by: str | None = None


class StageSpec(BaseModel):
    """One stage: an ``op`` from the stage registry, its ``params``, upstream ``needs``
    (argument name → stage name), a ``sweep`` grid (a parameter's axis may be renamed in the
    results and in how stages align: ``sweep: {model: {as: student_model, values: [...]}}``,
    kept as ``sweep_as``), a ``search`` of its parameters
    (:mod:`compressflow.engine.search_spec`; beside a sweep, one search per sweep point), per-task
    ``resources``, the ``scheduling`` policy of its tasks and ``checkpoint_every`` (overrides the
    pipeline's)."""

    model_config = _STRICT
    op: str
    params: dict[str, Any] = Field(default_factory=dict)
    needs: dict[str, str] = Field(default_factory=dict)
    sweep: dict[str, list[Any]] = Field(default_factory=dict)
    #: parameter -> the name of its sweep axis, where the ``{as: ..., values: [...]}`` form renamed it
    sweep_as: dict[str, str] = Field(default_factory=dict)
    resources: dict[str, float] = Field(default_factory=dict)
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec)
    checkpoint_every: int | None = Field(default=None, ge=0)
    search: SearchSpec | None = None

    def axis(self, param: str) -> str:
        """The sweep axis (point key, results dimension) of swept parameter ``param``."""
        return self.sweep_as.get(param, param)

    def axes(self) -> dict[str, list[Any]]:
        """Axis name -> values of this stage's own sweep."""
        return {self.axis(p): v for p, v in self.sweep.items()}

    def own_params(self, point: Mapping[str, Any]) -> dict[str, Any]:
        """The parameter values of this stage's own sweep axes at ``point``."""
        return {p: point[self.axis(p)] for p in self.sweep if self.axis(p) in point}


class PipelineSpec(BaseModel):
    """A whole study: ``name``, ``data``, ``energy`` and ``stages`` (in any order; ``needs``
    defines the dependencies).

    ``checkpoint_every`` (default 1; a stage may set its own) is how many epochs a training
    task runs between saving its resumable state (:meth:`compressflow.ops.OpContext.fit`), so
    a retried or re-run task continues where it stopped; 0 saves none. It changes no task key."""

    model_config = _STRICT
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    data: DataSpec = Field(default_factory=DataSpec)
    energy: EnergySpec = Field(default_factory=EnergySpec)
    stages: dict[str, StageSpec] = Field(min_length=1)
    checkpoint_every: int = Field(default=1, ge=0)
    #: user extensions imported on the client and every worker (:mod:`compressflow.plugins`):
    #: ``.py`` files, package folders (relative to the spec file's folder) or module names;
    #: kept as absolute paths once loaded
    plugins: yaml_tuples(tuple[str, ...]) = ()  # type: ignore[valid-type]  # built at runtime for pydantic

    @model_validator(mode="before")
    @classmethod
    def _renamed_axes(cls, data: Any) -> Any:
        """``sweep: {p: {as: name, values: [...]}}`` -> ``sweep: {p: [...]}``, ``sweep_as: {p: name}``
        (here, where the stage's name is known for the error line)."""
        stages = data.get("stages") if isinstance(data, dict) else None
        if not isinstance(stages, dict) or _stage_name_problem(list(stages)):
            return data  # a bad stage name is reported by _safe_stage_names
        out = {}
        for name, st in stages.items():
            sweep = st.get("sweep") if isinstance(st, dict) else None
            if isinstance(sweep, dict) and any(isinstance(v, dict) for v in sweep.values()):
                flat, renamed = {}, dict(st.get("sweep_as") or {})
                for param, entry in sweep.items():
                    if isinstance(entry, dict):
                        problem = _renamed_axis_problem(entry)
                        if problem:
                            line = f"{field_path(f'stages.{name}.sweep', param)}: {problem} (got {shown(entry)})"
                            raise PydanticCustomError("spec_line", "{line}", {"line": line})
                        flat[param], renamed[param] = entry["values"], entry["as"]
                    else:
                        flat[param] = entry
                st = {**st, "sweep": flat, "sweep_as": renamed}
            out[name] = st
        return {**data, "stages": out}

    @field_validator("stages", mode="before")
    @classmethod
    def _safe_stage_names(cls, stages: Any) -> Any:
        if isinstance(stages, Mapping):
            problem = _stage_name_problem(list(stages))
            if problem:
                raise PydanticCustomError("spec_line", "{line}", {"line": problem})
        return stages

    def order(self) -> list[str]:
        """Stage names in dependency order (upstream first)."""
        graph = {name: set(st.needs.values()) for name, st in self.stages.items()}
        return list(graphlib.TopologicalSorter(graph).static_order())


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
    if isinstance(spec, (str, os.PathLike)):
        raw = _read_yaml(Path(spec))
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
        raise SpecError(one_line(exc)) from None
    _check_stages(parsed)
    check_size(parsed)
    return parsed


def _read_yaml(path: Path) -> Any:
    return read_yaml(path, field="spec", what="a spec")


def one_line(exc: ValidationError) -> str:
    """The first pydantic error as ``field.path: message (got value)`` on one line."""
    err = exc.errors()[0]
    loc = field_path("", *err["loc"])
    if err["type"] == "extra_forbidden":
        return f"{loc}: unknown key {shown(err['loc'][-1])}; {_valid_keys(exc.title, err['loc'])}"
    if err["type"] == "missing":
        return f"{loc}: required field is missing"
    return describe_error(err)


def _valid_keys(model_title: str, loc: tuple) -> str:
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
    return f"valid keys: {', '.join(model.model_fields)}"


def _check_stages(spec: PipelineSpec) -> None:
    names = list(spec.stages)
    for name, st in spec.stages.items():
        where = f"stages.{name}"
        if st.op not in OPS:
            raise SpecError(f"{where}.op: {OPS.unknown_message(st.op)}")
        sig = stage_signature(st.op)
        for arg, upstream in st.needs.items():
            at = field_path(f"{where}.needs", arg)
            if arg not in sig.artifacts:
                valid = ", ".join(sig.artifacts) or "none (this op takes no upstream stage)"
                raise SpecError(f"{at}: op {st.op!r} has no input {shown(arg)}; valid inputs: {valid}")
            if upstream not in spec.stages:
                raise SpecError(f"{at}: no stage named {shown(upstream)}; stages are: {', '.join(names)}")
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
                raise SpecError(f"{at}: op {st.op!r} has no parameter {shown(axis)}; valid: {', '.join(sig.params)}")
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
            for value in values:
                sig.validate({**st.params, **first_point, axis: value}, where=f"{where}.sweep")
        key_by = st.scheduling.key_by
        if key_by is not None and key_by not in st.axes():
            raise SpecError(f"{where}.scheduling.key_by: {shown(key_by)} is not a sweep axis of this stage; "
                            f"sweep axes: {', '.join(st.axes()) or 'none'}")
        for resource, amount in st.resources.items():
            if not amount > 0:  # Dask waits forever for a worker offering 0, a negative or NaN amount
                raise SpecError(f"{field_path(f'{where}.resources', resource)}: must be > 0 (got {amount!r})")
    try:
        spec.order()
    except graphlib.CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        raise SpecError(f"stages: dependency cycle {cycle}; remove one of these needs") from None
    for name, st in spec.stages.items():  # an op's own cross-stage checks (e.g. blockwise layer names)
        OPS.check(st.op)(spec, name)


_AXIS_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _renamed_axis_problem(entry: dict) -> str | None:
    if set(entry) != {"as", "values"}:
        return "a renamed sweep axis is {as: <axis name>, values: [...]}, with exactly those two keys"
    if not isinstance(entry["as"], str) or not _AXIS_NAME.fullmatch(entry["as"]):
        return "'as' must be an axis name: letters, digits and _ (start with a letter or _), at most 64 characters"
    if not isinstance(entry["values"], list):
        return "'values' must be a list"
    return None


def reserved_stage_names() -> dict[str, str]:
    """Names the results tree uses for itself: ``tasks`` (the ledger) and every study-level
    summary registered in :data:`~compressflow.registries.SUMMARIES`. A summary may also
    write ``<name>_<stage>`` groups and the report finds its groups by prefix, so every name
    starting with a summary's name is reserved too. Name → what uses it."""
    return {"tasks": "the ledger (the results' /tasks group)",
            **{name: f"the study-level summary groups /{name}* (the report reads every group so named)"
               for name in SUMMARIES}}


def _stage_name_problem(names: list[Any]) -> str | None:
    """Why a stage name cannot be used, as a message line, or None. A stage name becomes a
    Zarr group path, a DataTree key and part of file names, so it is a plain identifier;
    names are compared ignoring case as a case-insensitive file system would."""
    reserved = reserved_stage_names()
    seen: dict[str, str] = {}
    for name in names:
        if not isinstance(name, str):
            kind = {type(None): "null", bool: "boolean", int: "integer", float: "number"}.get(type(name), "value")
            reason = f"it is a YAML {kind}, not a string"
        elif not name:
            reason = "it is empty"
        elif len(name) > MAX_STAGE_NAME:
            reason = f"it has {len(name)} characters"
        elif not _STAGE_NAME.fullmatch(name):
            bad = name[0] if not re.fullmatch(r"[A-Za-z_]", name[0]) else next(
                c for c in name if not re.fullmatch(r"[A-Za-z0-9_-]", c))
            reason = f"it {'starts with' if bad == name[0] else 'contains'} {bad!r}"
        else:
            reason = None
        if reason:
            return f"stages: stage name {shown(name)} is not allowed: {reason}; {_NAME_RULE}"
        low = name.lower()
        for word, used_by in reserved.items():
            if low == word or (word != "tasks" and low.startswith(word)):
                return f"stages.{name}: {name!r} is reserved for {used_by}; rename the stage"
        if low in seen:
            return (f"stages.{name}: {name!r} and {seen[low]!r} differ only in case; their result groups would "
                    f"collide on a case-insensitive file system; rename one")
        seen[low] = name
    return None
