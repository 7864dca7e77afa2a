"""compressflow: model-compression studies as Dask task graphs, with per-task energy and CO₂,
returned as one labelled :class:`xarray.DataTree`.

Examples
--------
>>> import compressflow
>>> tree = compressflow.run("tasks/quickstart.yaml")        # doctest: +SKIP
>>> tree["tasks"]["co2_g"].sum()                            # doctest: +SKIP
"""

from importlib.metadata import PackageNotFoundError, version

from compressflow.errors import DataError, InputError, SpecError
from compressflow.engine.records import Artifact, Record
from compressflow.registries import DATASETS, LOSSES, MODELS, OPS, STAGES, Registry
from compressflow.results import open_results
from compressflow.engine.runner import run
from compressflow.engine.spec import load_spec

try:
    __version__ = version("compressflow")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

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
    "load_spec",
    "open_results",
    "run",
]
