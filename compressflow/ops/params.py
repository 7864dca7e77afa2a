"""Parameter types an op declares in its signature, validated when a spec is loaded: names that
must be registered (:data:`ModelName`, :data:`DetectorName`, :data:`LossName`,
:data:`BlockName`), and the numbers every op shares (:data:`Width`, :data:`Fraction`,
:data:`Temperature`). Importing them imports no torch.

Examples
--------
>>> from pydantic import TypeAdapter, ValidationError
>>> TypeAdapter(ModelName).validate_python("resnet18")
'resnet18'
>>> try:
...     TypeAdapter(ModelName).validate_python("resnt18")
... except ValidationError as exc:
...     print(exc.errors()[0]["msg"][:70])
Value error, unknown model 'resnt18' (did you mean 'resnet18'?); valid
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from compressflow._registry import Registry
from compressflow.nn.temperature import check_temperature
from compressflow.registries import BLOCKS, LOSSES, MODELS

__all__ = ["BlockName", "DetectorName", "Fraction", "LossName", "ModelName", "Shown", "Temperature", "Width",
           "registered"]


@dataclass(frozen=True)
class Shown:
    """How ``compressflow list OP`` shows a parameter whose annotation cannot say it: its
    ``type`` as a person writes it, and what is ``allowed`` (called when listed, so a registry's
    plugin names are included). Metadata of an ``Annotated`` type; pydantic ignores it.

    >>> Shown("str", lambda: "one of: a, b").allowed()
    'one of: a, b'
    """

    type: str
    allowed: Callable[[], str]


def registered(registry: Registry, **where: Any) -> AfterValidator:
    """A pydantic validator accepting only names registered in ``registry`` with the facts
    ``where`` (e.g. ``task="detection"``); the error lists the valid ones."""

    def check(name: str) -> str:
        if name not in registry.list(**where):
            raise ValueError(registry.unknown_message(name, **where))
        return name

    return AfterValidator(check)


def _names(registry: Registry, **where: Any) -> Shown:
    """A registry's names (with facts ``where``), as ``list OP`` shows them."""
    return Shown("str", lambda: f"one of: {', '.join(registry.list(**where))}")


#: an image classifier of :data:`~compressflow.registries.MODELS`
ModelName = Annotated[str, registered(MODELS, task="classification"), _names(MODELS, task="classification")]
#: a detector of :data:`~compressflow.registries.MODELS` (``ssd_vgg16``, ``ssdlite_mobilenet_v3``)
DetectorName = Annotated[str, registered(MODELS, task="detection"), _names(MODELS, task="detection")]
#: a KD loss of :data:`~compressflow.registries.LOSSES`
LossName = Annotated[str, registered(LOSSES), _names(LOSSES)]
#: a replacement block of :data:`~compressflow.registries.BLOCKS`
BlockName = Annotated[str, registered(BLOCKS), _names(BLOCKS)]
#: a channel-width multiplier
Width = Annotated[float, Field(gt=0, le=4)]
#: a number in [0, 1] (a weight, a threshold, a fraction of the epochs)
Fraction = Annotated[float, Field(ge=0, le=1)]
#: a fixed τ > 0, or ``{"stochastic": [low, high]}`` (STKD's τ drawn per batch)
Temperature = Annotated[Any, AfterValidator(check_temperature),
                        Shown("float | {stochastic: [low, high]}",
                              lambda: "> 0, or stochastic: τ drawn per batch from the integers low..high, "
                                      "1 <= low <= high (STKD)")]
