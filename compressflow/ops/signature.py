"""A stage's parameters, read from its function signature, and their validation.

A stage is ``fn(ctx, *, <artifact inputs>: Artifact, <params>...) -> Record``: parameters
annotated :class:`~compressflow.rundir.records.Artifact` are upstream inputs (wired by ``needs``),
one upstream task per call; parameters annotated :data:`~compressflow.rundir.records.Upstream` are
*fan-in* inputs that receive every task of the upstream stage in one call;
every other keyword is a parameter validated by pydantic from its annotation and default.
A parameter annotated with a pydantic model (e.g. the training ``Schedule``) is a *group*:
its fields appear as flat parameters in the spec (``epochs: 8``) and the function receives
the model instance, so stages that share a group declare it once.

Parameters are validated strictly, as a spec is data: no silent coercion (``epochs: true``,
``epochs: 1.5`` and ``lr: '0.1'`` are refused; an integer is accepted where a float is
expected and a YAML list where a tuple is), every number must be finite, every integer must
fit in 64 bits, and a parameter named ``seed`` annotated ``int`` is a :data:`Seed`
(0 ≤ seed < 2**63, what ``torch.manual_seed`` and numpy's generators both accept)."""

from __future__ import annotations

import copy
import functools
import inspect
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model
from pydantic_core import ErrorDetails

from compressflow.errors import SpecError, did_you_mean
from compressflow.registries import OPS
from compressflow.rundir.records import Artifact, Upstream

__all__ = ["INT64_MAX", "PARAMS_CONFIG", "Seed", "StageSignature", "check_numbers", "describe_error", "field_path",
           "literal_choices", "shown", "stage_signature", "yaml_tuples"]

INT64_MAX = 2**63 - 1
#: a random seed: what ``torch.manual_seed``, ``torch.Generator.manual_seed`` and
#: ``numpy.random.default_rng`` all accept
Seed = Annotated[int, Field(ge=0, le=INT64_MAX)]
#: how every op's parameters validate: unknown names refused, no coercion, finite floats
PARAMS_CONFIG = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
# a bare name prints as is in a field path; anything else (a user's odd key) is quoted
_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_SHOWN_CHARS = 80


def field_path(where: str, *keys: Any) -> str:
    """A field path for a message: ``where`` (an already formatted path such as
    ``stages.teacher.params``, or ``""``) followed by ``keys`` as a spec holds them: plain
    names as ``.epochs``, list indices as ``[1]``, anything else quoted (``['a\\nb']``), so
    a message stays one line whatever keys a spec holds."""
    out = where
    for key in keys:
        if isinstance(key, int) and not isinstance(key, bool):
            out += f"[{key}]"
        elif isinstance(key, str) and _BARE.fullmatch(key):
            out += f".{key}" if out else key
        else:
            out += f"[{shown(key)}]"
    return out or "spec"


def shown(value: Any) -> str:
    """``repr(value)`` on one line, cut to a readable length (a message quotes the bad value,
    not a whole 10,000-item sweep)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"<an integer of {value.bit_length()} bits>"  # repr of a huge int is slow or refused
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001  (a value whose repr fails is still reported)
        text = f"<{type(value).__name__}>"
    text = text.replace("\n", "\\n")
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def describe_error(err: ErrorDetails, where: str = "") -> str:
    """One pydantic error as ``field.path: message (got value)`` on one line. An error raised
    as ``PydanticCustomError("spec_line", "{line}", {"line": ...})`` is already a whole line."""
    # YAML has lists, not tuples
    msg = err["msg"].removeprefix("Value error, ").replace("\n", " ").replace("a valid tuple", "a list")
    if err["type"] == "spec_line":
        return msg
    if err["loc"][-1:] == ("[key]",):  # pydantic's marker for a bad mapping key: name the mapping
        return (f"{field_path(where, *err['loc'][:-2])}: the key {shown(err.get('input'))} is not a name; "
                f"keys here are strings")
    loc = field_path(where, *err["loc"])
    if "valid choices" in msg:
        return f"{loc}: {msg}"
    return f"{loc}: {msg} (got {shown(err.get('input'))})"


def check_numbers(value: Any, where: str, depth: int = 0, max_depth: int = 64) -> None:
    """Refuse non-finite floats and integers beyond 64 bits anywhere in ``value`` (nested
    mappings and lists included), naming the field: ``inf`` epochs or a ``2**70`` seed
    would otherwise fail inside a task, after the upstream work was done.

    Raises
    ------
    SpecError
        One line naming the field and the bad number.
    """
    if depth > max_depth:
        raise SpecError(f"{where}: nested deeper than {max_depth} levels; a spec needs only a few")
    if isinstance(value, bool):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(f"{where}: must be a finite number (got {value!r})")
    if isinstance(value, int) and not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise SpecError(f"{where}: must be an integer in [-2**63, 2**63 - 1] (got {shown(value)})")
    if isinstance(value, dict):
        for k, v in value.items():
            check_numbers(v, field_path(where, k), depth + 1, max_depth)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_numbers(v, field_path(where, i), depth + 1, max_depth)


def yaml_tuples(ann: Any) -> Any:
    """``ann``, accepting a list where it expects a tuple (YAML has lists only), and
    otherwise unchanged; items are still validated strictly."""

    def has_tuple(t: Any) -> bool:
        origin = typing.get_origin(t)
        if origin is tuple or t is tuple:
            return True
        if origin is Annotated:
            return has_tuple(typing.get_args(t)[0])
        if origin in (typing.Union, types.UnionType):
            return any(has_tuple(a) for a in typing.get_args(t))
        return False

    if not has_tuple(ann):
        return ann
    return Annotated[ann, BeforeValidator(lambda v: tuple(v) if isinstance(v, list) else v)]


@dataclass(frozen=True)
class StageSignature:
    op: str
    params: tuple[str, ...]
    artifacts: tuple[str, ...]
    required_artifacts: tuple[str, ...]
    model: type[BaseModel]
    groups: dict[str, type[BaseModel]]
    fan_in: tuple[str, ...] = ()  # inputs annotated Upstream: every task of the upstream stage

    def call(self, fn, ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> Any:
        """Call ``fn`` with validated flat ``params``, rebuilding each parameter group."""
        kwargs = dict(params)
        for name, group in self.groups.items():
            kwargs[name] = group(**{f: kwargs.pop(f) for f in group.model_fields if f in kwargs})
        return fn(ctx, **kwargs, **inputs)

    def validate(self, params: dict[str, Any], where: str) -> dict[str, Any]:
        """Validated params with defaults filled in; raises SpecError (one line)."""
        unknown = [k for k in params if k not in self.params]
        moved = OPS.info(self.op)["moved"] if unknown and self.op in OPS else {}
        if unknown and unknown[0] in moved:
            raise SpecError(f"{field_path(where, unknown[0])}: op {self.op!r} no longer takes {unknown[0]!r}: "
                            f"{moved[unknown[0]]}")
        if unknown:
            raise SpecError(
                f"{field_path(where, unknown[0])}: op {self.op!r} has no parameter {shown(unknown[0])}"
                f"{did_you_mean(unknown[0], self.params)}; valid: {', '.join(self.params)}"
            )
        for name, value in params.items():
            check_numbers(value, field_path(where, name))
        try:
            return self.model.model_validate(params).model_dump()
        except ValidationError as exc:
            err = exc.errors()[0]
            if err["type"] == "missing":
                loc = field_path("", *err["loc"])
                raise SpecError(f"{field_path(where, loc)}: op {self.op!r} requires {loc!r}; "
                                f"set it in params or sweep") from None
            text = describe_error(err, where)
            if err["type"] == "literal_error" and err["loc"][0] in self.model.model_fields:  # a misspelt choice?
                hint = did_you_mean(err.get("input"), literal_choices(self.model.model_fields[str(err["loc"][0])].annotation))
                text = f"{text[:-1]}; {hint.strip()[1:-1]})" if hint else text  # (got 'adamm'; did you mean 'adam'?)
            raise SpecError(text) from None


def literal_choices(ann: Any) -> list[Any]:
    """The values of every ``Literal`` in ``ann`` (inside ``Annotated``, unions, tuples).

    >>> literal_choices(typing.Optional[typing.Literal["sgd", "adam"]])
    ['sgd', 'adam']
    """
    if typing.get_origin(ann) is typing.Literal:
        return list(typing.get_args(ann))
    return [c for a in typing.get_args(ann) for c in literal_choices(a)]


def stage_signature(op: str) -> StageSignature:
    """The parameters, inputs and validating model of op ``op``, read off its function (cached
    per function: a plugin imported again after an edit has a new one)."""
    return _signature(op, OPS.get(op))


@functools.cache
def _signature(op: str, fn: Any) -> StageSignature:
    hints = typing.get_type_hints(fn, include_extras=True)
    fields: dict[str, Any] = {}
    groups: dict[str, type[BaseModel]] = {}
    artifacts, required, fan_in = [], [], []
    for i, (name, p) in enumerate(inspect.signature(fn).parameters.items()):
        if i == 0:
            continue  # ctx
        ann = hints.get(name, Any)
        if ann is Artifact or ann == (Artifact | None) or ann == Upstream:
            artifacts.append(name)
            if ann == Upstream:
                fan_in.append(name)
            if p.default is inspect.Parameter.empty:
                required.append(name)
            continue
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            groups[name] = ann
            # the stage's own default instance (e.g. a shorter fine-tuning schedule) wins
            overrides = p.default.model_dump() if isinstance(p.default, BaseModel) else {}
            for f, info in ann.model_fields.items():
                info = copy.copy(info)
                info.default = overrides.get(f, info.default)
                fields[f] = (_spec_type(f, info.annotation), info)
            continue
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[name] = (_spec_type(name, ann), default)
    model = create_model(f"{op}_params", __config__=PARAMS_CONFIG, **fields)
    return StageSignature(op, tuple(fields), tuple(artifacts), tuple(required), model, groups, tuple(fan_in))


def _spec_type(name: str, ann: Any) -> Any:
    """The type a parameter validates with: a bare ``seed: int`` is a :data:`Seed`; tuples
    accept YAML lists."""
    if name == "seed" and ann is int:
        return Seed
    return yaml_tuples(ann)
