"""Pipeline specs: YAML → validated, frozen data, checked against the registries before any
task runs. Every problem becomes one :class:`~compressflow.errors.SpecError` line that names
the field, quotes the bad value and lists what is valid."""

from __future__ import annotations

import graphlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from compressflow import stages as _stages  # noqa: F401  (registers the built-in ops)
from compressflow.errors import SpecError
from compressflow.registries import DATASETS, STAGES
from compressflow.stages._signature import stage_signature

__all__ = ["DataSpec", "EnergySpec", "PipelineSpec", "SchedulingSpec", "StageSpec", "load_spec", "one_line"]

_STRICT = ConfigDict(extra="forbid", frozen=True)


class DataSpec(BaseModel):
    """Which dataset every stage of the pipeline uses (see :func:`compressflow.data.load_splits`)."""

    model_config = _STRICT
    dataset: str = "digits"
    image_size: int | None = Field(default=None, ge=4, le=512)
    channels: int | None = None
    val_fraction: float = Field(default=0.15, gt=0, lt=1)
    test_fraction: float = Field(default=0.2, gt=0, lt=1)
    seed: int = 0
    root: str | None = None
    augment: tuple[str, ...] | None = None
    num_samples: int = Field(default=1000, ge=20)
    num_classes: int = Field(default=10, ge=2)

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        if v not in DATASETS:
            raise ValueError(DATASETS.unknown_message(v))
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
    (argument name → stage name), a ``sweep`` grid, per-task ``resources`` and the
    ``scheduling`` policy of its tasks."""

    model_config = _STRICT
    op: str
    params: dict[str, Any] = Field(default_factory=dict)
    needs: dict[str, str] = Field(default_factory=dict)
    sweep: dict[str, list[Any]] = Field(default_factory=dict)
    resources: dict[str, float] = Field(default_factory=dict)
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec)


class PipelineSpec(BaseModel):
    """A whole study: ``name``, ``data``, ``energy`` and ``stages`` (in any order; ``needs``
    defines the dependencies)."""

    model_config = _STRICT
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    data: DataSpec = Field(default_factory=DataSpec)
    energy: EnergySpec = Field(default_factory=EnergySpec)
    stages: dict[str, StageSpec] = Field(min_length=1)

    def order(self) -> list[str]:
        """Stage names in dependency order (upstream first)."""
        graph = {name: set(st.needs.values()) for name, st in self.stages.items()}
        return list(graphlib.TopologicalSorter(graph).static_order())


def load_spec(spec: str | os.PathLike | Mapping[str, Any] | PipelineSpec) -> PipelineSpec:
    """Load and validate a pipeline spec.

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
    >>> spec = load_spec({"name": "demo", "stages": {"t": {"op": "train", "params": {"epochs": 1}}}})
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
    if not isinstance(raw, dict):
        raise SpecError(f"spec: the top level must be a mapping of name/data/energy/stages, got {type(raw).__name__}")
    try:
        parsed = PipelineSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(one_line(exc)) from None
    _check_stages(parsed)
    return parsed


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError(f"spec: file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise SpecError(f"spec: cannot read {str(path)!r}: {exc.strerror}") from None
    try:
        # safe_load: a spec is data and can never construct objects or run code
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"spec: {str(path)!r} is not valid YAML{where}: {problem}") from None


def one_line(exc: ValidationError) -> str:
    """The first pydantic error as ``field.path: message (got value)`` on one line."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "spec"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"{loc}: unknown key {str(err['loc'][-1])!r}; {_valid_keys(exc.title, err['loc'])}"
    if err["type"] == "missing":
        return f"{loc}: required field is missing"
    if "valid choices" in msg:
        return f"{loc}: {msg}"
    return f"{loc}: {msg} (got {err.get('input')!r})".replace("\n", " ")


def _valid_keys(model_title: str, loc: tuple) -> str:
    model: type[BaseModel] = {m.__name__: m for m in (PipelineSpec, DataSpec, EnergySpec, StageSpec, SchedulingSpec)}.get(
        model_title, PipelineSpec
    )
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if isinstance(part, str) else None
        ann = getattr(field, "annotation", None)
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
        if st.op not in STAGES:
            raise SpecError(f"{where}.op: {STAGES.unknown_message(st.op)}")
        sig = stage_signature(st.op)
        for arg, upstream in st.needs.items():
            if arg not in sig.artifacts:
                valid = ", ".join(sig.artifacts) or "none (this op takes no upstream stage)"
                raise SpecError(f"{where}.needs.{arg}: op {st.op!r} has no input {arg!r}; valid inputs: {valid}")
            if upstream not in spec.stages:
                raise SpecError(f"{where}.needs.{arg}: no stage named {upstream!r}; stages are: {', '.join(names)}")
            if upstream == name:
                raise SpecError(f"{where}.needs.{arg}: a stage cannot need itself")
        missing = [a for a in sig.required_artifacts if a not in st.needs]
        if missing:
            raise SpecError(
                f"{where}.needs: op {st.op!r} needs an upstream stage for {', '.join(map(repr, missing))}; "
                f"add e.g. needs: {{{missing[0]}: <stage name>}}"
            )
        for axis, values in st.sweep.items():
            if axis not in sig.params:
                raise SpecError(
                    f"{where}.sweep.{axis}: op {st.op!r} has no parameter {axis!r}; valid: {', '.join(sig.params)}"
                )
            if not values:
                raise SpecError(f"{where}.sweep.{axis}: the sweep is empty; give at least one value")
            if axis in st.params:
                raise SpecError(f"{where}.sweep.{axis}: {axis!r} is both in params and in sweep; keep one")
        first_point = {axis: values[0] for axis, values in st.sweep.items()}  # a swept param may be required
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
        if key_by is not None and key_by not in st.sweep:
            raise SpecError(f"{where}.scheduling.key_by: {key_by!r} is not a sweep axis of this stage; "
                            f"sweep axes: {', '.join(st.sweep) or 'none'}")
        bad = [k for k, v in st.resources.items() if v <= 0]
        if bad:
            raise SpecError(f"{where}.resources.{bad[0]}: must be > 0 (got {st.resources[bad[0]]!r})")
    try:
        spec.order()
    except graphlib.CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        raise SpecError(f"stages: dependency cycle {cycle}; remove one of these needs") from None
    for name, st in spec.stages.items():  # an op's own cross-stage checks (e.g. blockwise layer names)
        check = getattr(STAGES.get(st.op), "check_spec", None)
        if check is not None:
            check(spec, name)
