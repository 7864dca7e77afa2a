"""Showing compressflow's log messages to a person: library code only logs (to loggers under
``compressflow``); the CLI, and :func:`compressflow.run` for a notebook user, show them on
stderr with :func:`console` unless the caller has configured the ``compressflow`` logger."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

__all__ = ["LOGGER", "console"]

#: the parent of every compressflow logger (``compressflow.study``, ...)
LOGGER = "compressflow"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a message is emitted, so a redirection made
    after the handler was attached (a notebook's, pytest's capture) is followed."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it
        pass


class _ConsoleFormatter(logging.Formatter):
    """The message alone, as the CLI always printed it; progress (below WARNING) starts with
    a carriage return so it overwrites a progress bar drawn on the same terminal line."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return f"\r{text}" if record.levelno < logging.WARNING else text


@contextlib.contextmanager
def console(level: int = logging.INFO) -> Iterator[None]:
    """Show messages of the ``compressflow`` loggers at ``level`` and above on stderr while
    the block runs.

    Nothing changes if the ``compressflow`` logger already has a handler (the caller chose
    where its messages go, or an enclosing ``console`` is active). Otherwise a stderr handler
    is attached for the block, the logger's level is lowered to ``level`` if it would drop
    such messages, and propagation to the root logger is paused so a root handler does not
    show each message a second time.

    Parameters
    ----------
    level : int
        ``logging.INFO`` shows progress; ``logging.WARNING`` only warnings and errors.
    """
    logger = logging.getLogger(LOGGER)
    if logger.handlers:
        yield
        return
    handler = _StderrHandler()
    handler.setFormatter(_ConsoleFormatter())
    handler.setLevel(level)
    saved = logger.level, logger.propagate
    if logger.getEffectiveLevel() > level:
        logger.setLevel(level)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
