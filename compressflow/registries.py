"""The project's registries: every pluggable name a spec can use lives in one of these.

The built-in names and those of installed plugins (entry-point group ``compressflow.plugins``)
are registered when a registry is first looked up, not when this module is imported (see
:func:`compressflow.plugins.load`): importing compressflow stays cheap, and a worker gets
every built-in and installed name however it was started."""

from __future__ import annotations

from compressflow._registry import OpRegistry, Registry, UnknownNameError


def _load() -> bool:
    from compressflow import plugins  # late: plugins imports the modules that import this one

    return plugins.load()


MODELS: Registry = Registry("model", loader=_load)
DATASETS: Registry = Registry("dataset", loader=_load)
#: ops; each carries a code version that is part of its task keys and an optional spec-time
#: check: ``@OPS.register(version=2, check=check_schedule)``
OPS: OpRegistry = OpRegistry("op", loader=_load)
#: the former name of :data:`OPS` (the same object), kept so code written against it still works
STAGES: OpRegistry = OPS
LOSSES: Registry = Registry("loss", loader=_load)
#: replacement blocks for blockwise distillation: ``fn(conv, *, final_relu) -> nn.Module``
BLOCKS: Registry = Registry("block", loader=_load)
#: ``fn(spec, groups) -> {group name: Dataset}``: study-level tables computed from the stage groups
SUMMARIES: Registry = Registry("summary", loader=_load)

__all__ = ["BLOCKS", "DATASETS", "LOSSES", "MODELS", "OPS", "STAGES", "SUMMARIES", "OpRegistry", "Registry",
           "UnknownNameError"]
