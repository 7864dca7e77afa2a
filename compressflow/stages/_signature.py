"""A stage's parameters, read from its function signature, and their validation.

A stage is ``fn(ctx, *, <artifact inputs>: Artifact, <params>...) -> Record``: parameters
annotated :class:`~compressflow.records.Artifact` are upstream inputs (wired by ``needs``),
one upstream task per call; parameters annotated :data:`~compressflow.records.Upstream` are
*fan-in* inputs that receive every task of the upstream stage in one call;
every other keyword is a parameter validated by pydantic from its annotation and default.
A parameter annotated with a pydantic model (e.g. the training ``Schedule``) is a *group*:
its fields appear as flat parameters in the spec (``epochs: 8``) and the function receives
the model instance, so stages that share a group declare it once."""

from __future__ import annotations

import copy
import functools
import inspect
import typing
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, create_model

from compressflow._registry import Registry
from compressflow.errors import SpecError
from compressflow.records import Artifact, Upstream
from compressflow.registries import BLOCKS, LOSSES, MODELS, STAGES

__all__ = ["BlockName", "LossName", "ModelName", "StageSignature", "registered", "stage_signature"]


def registered(registry: Registry) -> AfterValidator:
    """A pydantic validator accepting only names registered in ``registry``."""

    def check(name: str) -> str:
        if name not in registry:
            raise ValueError(registry.unknown_message(name))
        return name

    return AfterValidator(check)


ModelName = Annotated[str, registered(MODELS)]
LossName = Annotated[str, registered(LOSSES)]
BlockName = Annotated[str, registered(BLOCKS)]


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
        if unknown:
            raise SpecError(
                f"{where}.{unknown[0]}: op {self.op!r} has no parameter {unknown[0]!r}; "
                f"valid: {', '.join(self.params)}"
            )
        try:
            return self.model.model_validate(params).model_dump()
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            if err["type"] == "missing":
                raise SpecError(f"{where}.{loc}: op {self.op!r} requires {loc!r}; set it in params or sweep") from None
            msg = err["msg"].removeprefix("Value error, ")
            got = "" if "valid choices" in msg else f" (got {err.get('input')!r})"
            raise SpecError(f"{where}.{loc}: {msg}{got}") from None


@functools.cache
def stage_signature(op: str) -> StageSignature:
    fn = STAGES.get(op)
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
                fields[f] = (info.annotation, info)
            continue
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[name] = (ann, default)
    model = create_model(f"{op}_params", __config__=ConfigDict(extra="forbid", strict=False), **fields)
    return StageSignature(op, tuple(fields), tuple(artifacts), tuple(required), model, groups, tuple(fan_in))
