"""The Python API: :func:`run` a study, :func:`submit` one and hold its :class:`Study` handle
(status, partial results, cancelling, progress in a terminal, a notebook or a log). The top of
the layers: it drives the engine and builds the results; ``compressflow`` exports its names."""

from compressflow.api.runner import run
from compressflow.api.study import Study, submit

__all__ = ["Study", "run", "submit"]
