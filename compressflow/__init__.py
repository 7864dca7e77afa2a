"""compressflow: model-compression studies as Dask task graphs, with per-task energy and CO₂,
returned as one labelled :class:`xarray.DataTree`.

The public names are imported on first use (scientific Python's ``lazy_loader``), so
``import compressflow`` and the CLI's ``--help`` stay cheap: torch, xarray and distributed are
imported only by what needs them — checking a spec imports no torch, opening results neither
torch nor distributed.

Examples
--------
>>> import compressflow
>>> tree = compressflow.run("tasks/quickstart.yaml")        # doctest: +SKIP
>>> tree["tasks"]["co2_g"].sum()                            # doctest: +SKIP
>>> compressflow.to_dataframe(tree)                         # doctest: +SKIP
>>> study = compressflow.submit("tasks/quickstart.yaml")   # doctest: +SKIP
>>> study.status(); study.results(); study.cancel("kd_grid")  # doctest: +SKIP
"""

import importlib.metadata as _metadata
import typing as _typing

import lazy_loader as _lazy

from compressflow.errors import DataError, InputError, SpecError

try:
    __version__ = _metadata.version("compressflow")
except _metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

if _typing.TYPE_CHECKING:  # type checkers and IDEs see the names; the interpreter imports them lazily
    from compressflow.api.runner import run
    from compressflow.api.study import Study, submit
    from compressflow.engine.cluster import local_cluster
    from compressflow.registries import DATASETS, LOSSES, MODELS, OPS, STAGES, Registry
    from compressflow.results import open_results, to_dataframe
    from compressflow.rundir.records import Artifact, Record
    from compressflow.spec import load_spec

_lazy_getattr, _, _lazy_names = _lazy.attach(__name__, submod_attrs={
    "api.runner": ["run"],
    "api.study": ["Study", "submit"],
    "engine.cluster": ["local_cluster"],
    "registries": ["DATASETS", "LOSSES", "MODELS", "OPS", "STAGES", "Registry"],
    "results": ["open_results", "to_dataframe"],
    "rundir.records": ["Artifact", "Record"],
    "spec": ["load_spec"],
})

__all__ = sorted([*_lazy_names, "DataError", "InputError", "SpecError"])


def __getattr__(name: str) -> _typing.Any:
    if name not in _lazy_names:
        raise AttributeError(f"module 'compressflow' has no attribute {name!r}")
    return _lazy_getattr(name)


def __dir__() -> list[str]:
    return list(__all__)
