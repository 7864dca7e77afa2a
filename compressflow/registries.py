"""The project's registries: every pluggable name a spec can use lives in one of these."""

from __future__ import annotations

from compressflow._registry import OpRegistry, Registry, UnknownNameError

MODELS: Registry = Registry("model")
DATASETS: Registry = Registry("dataset")
#: ops; each carries a code version (``@STAGES.register(version=2)``) that is part of its task keys
STAGES: OpRegistry = OpRegistry("op")
LOSSES: Registry = Registry("loss")
#: replacement blocks for blockwise distillation: ``fn(conv, *, final_relu) -> nn.Module``
BLOCKS: Registry = Registry("block")
#: ``fn(spec, groups) -> {group name: Dataset}``: study-level tables computed from the stage groups
SUMMARIES: Registry = Registry("summary")

__all__ = ["BLOCKS", "DATASETS", "LOSSES", "MODELS", "STAGES", "SUMMARIES", "OpRegistry", "Registry", "UnknownNameError"]
