"""Ops, the units of work, and the public contract for writing one.

An op is a function ``fn(ctx, *, <inputs>, <params>) -> Record`` registered in :data:`OPS`
(the function name is the op's name unless ``name=`` says otherwise):

* ``ctx`` is the task's :class:`OpContext`: its device, data (:meth:`OpContext.splits`),
  artifact paths, progress reports, the worker's energy meter, and :meth:`OpContext.fit`,
  the one training loop (progress and energy per epoch);
* inputs annotated :class:`Artifact` (one upstream task) or :data:`Upstream` (every task of
  the upstream stage, a fan-in) are wired by the spec's ``needs``;
* every other keyword is a parameter validated from its annotation and default; a
  :class:`Schedule` parameter appears flat in the spec (``epochs: 8``);
* ``@OPS.register(version=2, check=fn)`` sets the op's code version (part of its task keys)
  and its spec-time check ``fn(spec, stage_name)``, run before any task.

The built-in ops (one module per family: ``train``, ``evaluate``, ``distill``, ``quantize``, ``blockwise``,
``craft``, ``prune``, ``represent``, ``bias``, ``wait``, ``objective``) register when :data:`OPS` is first
looked up (see :mod:`compressflow.plugins`); importing this package imports neither them nor
torch, so a spec is checked without it. :class:`OpContext` (torch) is imported on first use.

Examples
--------
>>> import xarray as xr
>>> from compressflow.ops import OPS, Artifact, OpContext, Record, Schedule, check_schedule
>>> @OPS.register(check=check_schedule)                      # doctest: +SKIP
... def finetune(ctx: OpContext, *, model: Artifact, schedule: Schedule = Schedule(epochs=2)) -> Record:
...     net = load_checkpoint(model, ctx.device)
...     hist = ctx.fit(net, schedule, seed=0)
...     return Record(xr.Dataset({"val_accuracy": hist.val_accuracy[-1]}))
"""

from typing import TYPE_CHECKING, Any

from compressflow.engine.records import Artifact, Record, Upstream
from compressflow.ops.schedule import BLOCK_TRAINING, FINE_TUNING, BlockTraining, Schedule, check_schedule
from compressflow.registries import OPS

if TYPE_CHECKING:
    from compressflow.ops.context import OpContext

#: the modules whose import registers the built-in ops (imported by :func:`compressflow.plugins.load`)
FAMILIES = tuple(f"compressflow.ops.{m}" for m in
                 ("train", "evaluate", "distill", "quantize", "blockwise", "craft", "prune", "represent", "bias", "wait", "objective", "synthesize", "distill_detection"))


def __getattr__(name: str) -> Any:
    if name == "OpContext":  # torch: imported when an op author first asks for it
        from compressflow.ops.context import OpContext

        return OpContext
    raise AttributeError(f"module 'compressflow.ops' has no attribute {name!r}")

__all__ = ["BLOCK_TRAINING", "FAMILIES", "FINE_TUNING", "OPS", "Artifact", "BlockTraining", "OpContext", "Record", "Schedule",
           "Upstream", "check_schedule"]
