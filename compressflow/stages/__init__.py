"""The units of work. Each module registers one op in :data:`compressflow.registries.STAGES`;
importing this package registers them all."""

from compressflow.nn import losses  # noqa: F401  (the loss names a spec can use)
from compressflow.stages import distill, evaluate, train, wait  # noqa: F401

__all__ = ["distill", "evaluate", "train", "wait"]
