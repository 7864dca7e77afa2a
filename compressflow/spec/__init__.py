"""A study's spec: its schema (:mod:`.schema`), reading and checking it (:mod:`.load`), its
searches (:mod:`.search`) and its size (:mod:`.size`).

A layer of its own, between the ops (whose signatures validate a stage's parameters) and the
engine (which expands a spec into tasks), so the results can read a spec without the engine.
Importing it, and loading a spec, imports no torch."""

from compressflow.spec.load import MAX_SPEC_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES, check_models, load_spec
from compressflow.spec.schema import (MAX_STAGE_NAME, DataSpec, EnergySpec, PipelineSpec, SchedulingSpec, StageSpec,
                                      reserved_stage_names)
from compressflow.spec.size import MAX_TASKS, task_counts

__all__ = ["MAX_SPEC_BYTES", "MAX_STAGE_NAME", "MAX_TASKS", "MAX_YAML_DEPTH", "MAX_YAML_NODES", "DataSpec",
           "EnergySpec", "PipelineSpec", "SchedulingSpec", "StageSpec", "check_models", "load_spec",
           "reserved_stage_names", "task_counts"]
