"""The project's registries: every pluggable name a spec can use lives in one of these."""

from __future__ import annotations

from compressflow._registry import OpRegistry, Registry, UnknownNameError

MODELS: Registry = Registry("model")
DATASETS: Registry = Registry("dataset")
#: ops; each carries a code version that is part of its task keys and an optional spec-time
#: check: ``@OPS.register(version=2, check=check_schedule)``
OPS: OpRegistry = OpRegistry("op")
#: the former name of :data:`OPS` (the same object), kept so code written against it still works
STAGES: OpRegistry = OPS
LOSSES: Registry = Registry("loss")
#: replacement blocks for blockwise distillation: ``fn(conv, *, final_relu) -> nn.Module``
BLOCKS: Registry = Registry("block")
#: ``fn(spec, groups) -> {group name: Dataset}``: study-level tables computed from the stage groups
SUMMARIES: Registry = Registry("summary")

__all__ = ["BLOCKS", "DATASETS", "LOSSES", "MODELS", "OPS", "STAGES", "SUMMARIES", "OpRegistry", "Registry",
           "UnknownNameError"]
