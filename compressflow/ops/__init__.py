"""The units of work. Each module registers one op in :data:`compressflow.registries.STAGES`;
importing this package registers them all."""

from compressflow.nn import blocks, losses  # noqa: F401  (the loss and block names a spec can use)
from compressflow.ops import bias, blockwise, craft, distill, evaluate, prune, represent, train, wait  # noqa: F401

__all__ = ["blockwise", "distill", "evaluate", "train", "wait"]
