"""A stage's parameters, read from its function signature, and their validation.

A stage is ``fn(ctx, *, <artifact inputs>: Artifact, <params>...) -> Record``: parameters
annotated :class:`~compressflow.records.Artifact` are upstream inputs (wired by ``needs``);
every other keyword is a parameter validated by pydantic from its annotation and default.
A parameter annotated with a pydantic model (e.g. the training ``Schedule``) is a *group*:
its fields appear as flat parameters in the spec (``epochs: 8``) and the function receives
the model instance, so stages that share a group declare it once."""

from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, create_model

from compressflow._registry import Registry
from compressflow.errors import SpecError
from compressflow.records import Artifact
from compressflow.registries import LOSSES, MODELS, STAGES

__all__ = ["LossName", "ModelName", "StageSignature", "registered", "stage_signature"]


def registered(registry: Registry) -> AfterValidator:
    """A pydantic validator accepting only names registered in ``registry``."""

    def check(name: str) -> str:
        if name not in registry:
            raise ValueError(registry.unknown_message(name))
        return name

    return AfterValidator(check)


ModelName = Annotated[str, registered(MODELS)]
LossName = Annotated[str, registered(LOSSES)]


@dataclass(frozen=True)
class StageSignature:
    op: str
    params: tuple[str, ...]
    artifacts: tuple[str, ...]
    required_artifacts: tuple[str, ...]
    model: type[BaseModel]
    groups: dict[str, type[BaseModel]]

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
            msg = err["msg"].removeprefix("Value error, ")
            got = "" if "valid choices" in msg else f" (got {err.get('input')!r})"
            raise SpecError(f"{where}.{loc}: {msg}{got}") from None


@functools.cache
def stage_signature(op: str) -> StageSignature:
    fn = STAGES.get(op)
    hints = typing.get_type_hints(fn, include_extras=True)
    fields: dict[str, Any] = {}
    groups: dict[str, type[BaseModel]] = {}
    artifacts, required = [], []
    for i, (name, p) in enumerate(inspect.signature(fn).parameters.items()):
        if i == 0:
            continue  # ctx
        ann = hints.get(name, Any)
        if ann is Artifact or ann == (Artifact | None):
            artifacts.append(name)
            if p.default is inspect.Parameter.empty:
                required.append(name)
            continue
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            groups[name] = ann
            fields.update({f: (info.annotation, info) for f, info in ann.model_fields.items()})
            continue
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[name] = (ann, default)
    model = create_model(f"{op}_params", __config__=ConfigDict(extra="forbid", strict=False), **fields)
    return StageSignature(op, tuple(fields), tuple(artifacts), tuple(required), model, groups)
