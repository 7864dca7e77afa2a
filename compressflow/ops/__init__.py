"""Ops, the units of work, and the public contract for writing one — everything an op author
(and every built-in op) imports comes from here.

An op is a function ``fn(ctx, *, <inputs>, <params>) -> Record`` registered in :data:`OPS`
(the function name is the op's name unless ``name=`` says otherwise):

* ``ctx`` is the task's :class:`OpContext`: its device, data (:meth:`OpContext.splits`),
  artifact paths, progress reports, stop checks, the worker's energy meter, and
  :meth:`OpContext.fit`, the one training loop (progress and energy per epoch, resumable);
* inputs annotated :class:`Artifact` (one upstream task) or :data:`Upstream` (every task of
  the upstream stage, a fan-in: a list of :class:`LedgerEntry`) are wired by the spec's
  ``needs``;
* every other keyword is a parameter validated from its annotation and default when the spec
  is loaded (:data:`ModelName`, :data:`LossName`, :data:`Width`, ... and any pydantic type);
  a :class:`Schedule` parameter appears flat in the spec (``epochs: 8``);
* it returns a :class:`Record`: labelled metrics (an :class:`xarray.Dataset`) and optionally
  an :class:`Artifact` (a file and its hash) for the stages downstream;
* ``@OPS.register(version=2, check=fn, model_check=fn)`` sets the op's code version (part of
  its task keys) and its checks ``fn(spec, stage_name)`` (:mod:`compressflow.ops.checks`):
  ``check`` when the spec is loaded (no torch), ``model_check`` when the study is submitted;
  a user op's task keys also hold the SHA-256 of its source file, so an edited op runs again
  (``key_source=False``: version-only keys, and a warning when records of an earlier source
  are reused; :class:`~compressflow.registries.OpRegistry`).

The helpers the built-in ops use are public: :func:`fit_model` builds and trains a registered
model, :func:`model_record` checkpoints it and records its test metrics, curves and costs,
:func:`load_checkpoint` rebuilds an upstream model. Importing this package imports no torch
(each helper imports it when called) and no op family: the registries load those on first
lookup (:func:`compressflow.registries.load`), so a spec is checked without torch.

Examples
--------
>>> import xarray as xr
>>> from compressflow.ops import OPS, Artifact, OpContext, Record, Schedule, check_schedule, load_checkpoint
>>> @OPS.register(check=check_schedule)                      # doctest: +SKIP
... def finetune(ctx: OpContext, *, model: Artifact, schedule: Schedule = Schedule(epochs=2)) -> Record:
...     net = load_checkpoint(model, ctx.device)
...     hist = ctx.fit(net, schedule, seed=0)
...     return Record(xr.Dataset({"val_accuracy": hist.val_accuracy[-1]}))
"""

from compressflow.ops.checkpoints import load_checkpoint, load_weights, save_checkpoint
from compressflow.ops.checks import (SpecView, StageView, check_module_names, check_replaceable_layers, stage_model,
                                     stage_params)
from compressflow.ops.context import Cancelled, OpContext
from compressflow.ops.helpers import UNITS, curves, fit_model, model_costs, model_record, with_units, zarr_record
from compressflow.ops.params import BlockName, DetectorName, Fraction, LossName, ModelName, Temperature, Width
from compressflow.ops.schedule import (BLOCK_TRAINING, FINE_TUNING, BlockLr, BlockTraining, NonNegative, PositiveInt,
                                       Schedule, check_schedule)
from compressflow.ops.signature import Seed
from compressflow.registries import OPS
from compressflow.rundir.records import Artifact, LedgerEntry, Record, Upstream

__all__ = [
    "BLOCK_TRAINING", "FINE_TUNING", "OPS", "UNITS", "Artifact", "BlockLr", "BlockName", "BlockTraining", "Cancelled",
    "DetectorName", "Fraction", "LedgerEntry", "LossName", "ModelName", "NonNegative", "OpContext", "PositiveInt",
    "Record", "Schedule", "Seed", "SpecView", "StageView", "Temperature", "Upstream", "Width", "check_module_names",
    "check_replaceable_layers", "check_schedule", "curves", "fit_model", "load_checkpoint", "load_weights",
    "model_costs", "model_record", "save_checkpoint", "stage_model", "stage_params", "with_units", "zarr_record",
]
