"""The spec's schema: frozen pydantic models of a study (:class:`PipelineSpec` and its parts)
with the rules that need no registry lookup beyond names — stage names, renamed sweep axes,
the data block's options — and each option's one default.

:func:`compressflow.spec.load_spec` reads a file into these models and checks the stages
against the op registry."""

from __future__ import annotations

import graphlib
import os
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from compressflow.errors import did_you_mean
from compressflow.ops.signature import Seed, field_path, shown, yaml_tuples
from compressflow.registries import DATASETS, SUMMARIES
from compressflow.spec.search import SearchSpec

__all__ = ["GROUP_NAMES", "MAX_STAGE_NAME", "STAGE_LEDGER", "DataSpec", "EnergySpec", "PipelineSpec", "SchedulingSpec", "StageSpec",
           "reserved_stage_names"]

#: the longest stage name: it becomes a Zarr group, a DataTree key and part of file names
MAX_STAGE_NAME = 64
#: the variables every stage group of the results takes from the ledger
STAGE_LEDGER = ("status", "duration_s", "energy_kwh", "facility_kwh", "co2_g")
#: the names a stage group uses for itself (its ledger variables and its tasks' keys): no sweep
#: axis may be called so (``as:``), or the group would lose them
GROUP_NAMES = (*STAGE_LEDGER, "task_key")

_STRICT = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
_STAGE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_NAME_RULE = f"use letters, digits, _ and - (start with a letter or _), at most {MAX_STAGE_NAME} characters"


class DataSpec(BaseModel):
    """Which dataset every stage of the pipeline uses, and its options (see
    :func:`compressflow.data.load_splits`, :func:`compressflow.data.load_detection_splits`).

    One block for every dataset: each dataset takes the options its loader names (``root``
    means nothing to ``digits``, ``num_images`` only to ``shapes``), and only those count in a
    task's key (:func:`compressflow.engine.keys.dataset_options`)."""

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
    num_images: int = Field(default=300, ge=3, le=100_000)
    max_objects: int = Field(default=3, ge=1, le=50)

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        if v not in DATASETS:
            raise ValueError(DATASETS.unknown_message(v))
        return v

    @field_validator("augment")
    @classmethod
    def _known_augmentations(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        from compressflow.data.options import AUGMENT_OPS

        for op in v or ():
            if op not in AUGMENT_OPS:
                raise ValueError(f"unknown augmentation {op!r}{did_you_mean(op, AUGMENT_OPS)}; "
                                 f"valid choices: {', '.join(AUGMENT_OPS)}")
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
        from compressflow.energy.carbon import carbon_intensity

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
    (:mod:`compressflow.spec.search`; beside a sweep, one search per sweep point), per-task
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

    def checkpoint_every_of(self, stage: str) -> int:
        """Epochs between a training task's resumable states in ``stage``: the stage's own
        ``checkpoint_every``, else the pipeline's."""
        own = self.stages[stage].checkpoint_every
        return self.checkpoint_every if own is None else own

    def order(self) -> list[str]:
        """Stage names in dependency order (upstream first)."""
        graph = {name: set(st.needs.values()) for name, st in self.stages.items()}
        return list(graphlib.TopologicalSorter(graph).static_order())


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
