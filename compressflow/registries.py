"""The project's registries: every pluggable name a spec can use lives in one of these — and
what fills them on first lookup.

Built-in names and those of installed plugins (entry-point group ``compressflow.plugins``)
are registered when a registry is first looked up (:func:`load`), not when this module is
imported: importing compressflow stays cheap, and a worker gets every built-in and installed
name however it was started. The built-in modules are named here as strings, like entry
points, so this leaf module imports none of the layers that register into it; every module
named here imports without torch (tests/unit/test_import_cost.py), so a lookup never costs
the seconds of importing it."""

from __future__ import annotations

import importlib
import importlib.metadata
import threading
from types import ModuleType
from typing import Any

from compressflow._registry import OpRegistry, Registry, UnknownNameError
from compressflow.errors import PluginError, one_line

__all__ = ["BLOCKS", "BUILTIN_MODULES", "DATASETS", "ENTRY_POINT_GROUP", "LOSSES", "MODELS", "OPS", "STAGES",
           "SUMMARIES", "OpRegistry", "Registry", "UnknownNameError", "load"]

#: the entry-point group an installed package declares its compressflow modules in
ENTRY_POINT_GROUP = "compressflow.plugins"
#: the modules whose import registers compressflow's own names
BUILTIN_MODULES = (
    "compressflow.nn.losses", "compressflow.nn.blocks", "compressflow.nn.models", "compressflow.nn.detection",
    *(f"compressflow.data.{m}" for m in ("digits", "cifar", "tinyimagenet", "synthetic", "shapes", "voc")),
    *(f"compressflow.ops.{m}" for m in ("train", "evaluate", "distill", "quantize", "blockwise", "craft", "prune",
                                        "represent", "bias", "wait", "objective", "synthesize", "distill_detection")),
    "compressflow.results.kd_comparison",
)

_lock = threading.RLock()  # re-entrant: a module being loaded may look a name up (see load)
_state: dict[str, Any] = {"done": False, "loading": False, "error": None}


def load() -> bool:
    """Import compressflow's built-in modules and every entry point of the group
    ``compressflow.plugins``, once per process.

    The registries call this on their first lookup, so it rarely needs calling directly.
    An entry point names a module (imported) or a function (imported and called with no
    arguments).

    Returns
    -------
    bool
        True once everything is loaded; False when called again, from the same thread,
        by a module that the load is importing (the registry asks again later).

    Raises
    ------
    PluginError
        An entry point failed to import; raised again on every later lookup (a half-loaded
        plugin must not pass for a missing name).
    """
    if _state["done"]:
        return True
    with _lock:  # other threads wait here until the first one has loaded everything
        if _state["done"]:
            return True
        if _state["error"] is not None:
            error = _state["error"]
            raise PluginError(str(error)) from error.__cause__
        if _state["loading"]:
            return False
        _state["loading"] = True
        try:
            for name in BUILTIN_MODULES:
                importlib.import_module(name)
            for ep in _entry_points():
                _load_entry_point(ep)
        except PluginError as exc:
            _state["error"] = exc
            raise
        finally:
            _state["loading"] = False
        _state["done"] = True
    return True


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    seen: set[str] = set()
    unique = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.value not in seen:  # the same distribution found twice on sys.path
            seen.add(ep.value)
            unique.append(ep)
    return unique


def _load_entry_point(ep: importlib.metadata.EntryPoint) -> None:
    try:
        obj = ep.load()
        if callable(obj) and not isinstance(obj, (ModuleType, type)):
            obj()
    except Exception as exc:
        dist = getattr(getattr(ep, "dist", None), "name", None)
        origin = f" of package {dist!r}" if dist else ""
        raise PluginError(
            f"plugin entry point {ep.name!r} = {ep.value!r}{origin} (group {ENTRY_POINT_GROUP!r}) failed to load: "
            f"{type(exc).__name__}: {one_line(exc)}; fix or uninstall that package"
        ) from exc


#: image classifiers (``task="classification"``: ``fn(*, num_classes, in_channels, width)``) and
#: detectors (``task="detection"``: ``fn(*, num_classes, image_size, width)``)
MODELS: Registry = Registry("model", loader=load, facts={"task": "classification"})
#: datasets: ``fn(**options) -> Splits`` (classification) or ``DetectionSplits`` (detection);
#: ``check(**options)`` refuses bad options when the spec is loaded (no file is touched),
#: ``locate(**options)`` a missing file or folder when the study is submitted
DATASETS: Registry = Registry("dataset", loader=load, facts={"task": "classification", "check": None, "locate": None})
#: ops; each carries a code version that is part of its task keys, its checks and the data it
#: needs: ``@OPS.register(version=2, check=check_schedule)`` (see :class:`OpRegistry`)
OPS: OpRegistry = OpRegistry("op", loader=load)
#: the former name of :data:`OPS` (the same object), kept so code written against it still works
STAGES: OpRegistry = OPS
LOSSES: Registry = Registry("loss", loader=load)
#: replacement blocks for blockwise distillation: ``fn(conv, *, final_relu) -> nn.Module``
BLOCKS: Registry = Registry("block", loader=load)
#: ``fn(spec, groups) -> {group name: Dataset}``: study-level tables computed from the stage groups
SUMMARIES: Registry = Registry("summary", loader=load)
