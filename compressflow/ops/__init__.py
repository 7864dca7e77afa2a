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

Importing this package registers the built-in ops (one module per family).

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

from compressflow.engine.records import Artifact, Record, Upstream
from compressflow.nn import blocks, losses  # noqa: F401  (the loss and block names a spec can use)
from compressflow.ops.context import OpContext
from compressflow.ops.schedule import BLOCK_TRAINING, FINE_TUNING, BlockTraining, Schedule, check_schedule
from compressflow.registries import OPS

from compressflow.ops import bias, blockwise, craft, distill, evaluate, prune, represent, train, wait  # noqa: F401,E402  isort: skip

__all__ = ["BLOCK_TRAINING", "FINE_TUNING", "OPS", "Artifact", "BlockTraining", "OpContext", "Record", "Schedule",
           "Upstream", "check_schedule"]
