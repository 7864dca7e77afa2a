"""compressflow: model-compression studies as Dask task graphs, with per-task energy and CO₂,
returned as one labelled :class:`xarray.DataTree`.

The public names are imported on first use (PEP 562), so ``import compressflow`` and the
CLI's ``--help`` stay cheap: torch, xarray and distributed are imported only by what needs them.

Examples
--------
>>> import compressflow
>>> tree = compressflow.run("tasks/quickstart.yaml")        # doctest: +SKIP
>>> tree["tasks"]["co2_g"].sum()                            # doctest: +SKIP
>>> study = compressflow.submit("tasks/quickstart.yaml")   # doctest: +SKIP
>>> study.status(); study.results(); study.cancel("kd_grid")  # doctest: +SKIP
"""

import importlib as _importlib
import importlib.metadata as _metadata
import typing as _typing

from compressflow.errors import DataError, InputError, SpecError

try:
    __version__ = _metadata.version("compressflow")
except _metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

#: public name -> the module that defines it, imported when the name is first used
_LAZY = {
    "Artifact": "compressflow.engine.records",
    "Record": "compressflow.engine.records",
    "DATASETS": "compressflow.registries",
    "LOSSES": "compressflow.registries",
    "MODELS": "compressflow.registries",
    "OPS": "compressflow.registries",
    "STAGES": "compressflow.registries",
    "Registry": "compressflow.registries",
    "open_results": "compressflow.results",
    "run": "compressflow.engine.runner",
    "submit": "compressflow.engine.study",
    "Study": "compressflow.engine.study",
    "load_spec": "compressflow.engine.spec",
}

__all__ = [
    "DATASETS",
    "LOSSES",
    "MODELS",
    "OPS",
    "STAGES",
    "Artifact",
    "DataError",
    "InputError",
    "Record",
    "Registry",
    "SpecError",
    "Study",
    "load_spec",
    "open_results",
    "run",
    "submit",
]

if _typing.TYPE_CHECKING:  # type checkers and IDEs see the names; the interpreter imports them lazily
    from compressflow.engine.records import Artifact, Record
    from compressflow.engine.runner import run
    from compressflow.engine.spec import load_spec
    from compressflow.engine.study import Study, submit
    from compressflow.registries import DATASETS, LOSSES, MODELS, OPS, STAGES, Registry
    from compressflow.results import open_results


def __getattr__(name: str) -> _typing.Any:
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'compressflow' has no attribute {name!r}") from None
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
