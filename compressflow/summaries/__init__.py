"""Study-level tables computed from the stage groups when results are assembled (each module
registers one function in :data:`compressflow.registries.SUMMARIES`)."""

from compressflow.summaries import kd  # noqa: F401

__all__ = ["kd"]
