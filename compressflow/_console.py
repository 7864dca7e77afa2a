"""Showing compressflow's log messages to a person: library code only logs (to loggers under
``compressflow``); the CLI, :func:`compressflow.run` and :meth:`Study.progress` show them on
stderr with :func:`console` unless the caller has configured the ``compressflow`` logger.

compressflow attaches at most one handler of its own (a :class:`ConsoleHandler`); nested or
overlapping :func:`console` blocks share it, each asking for a level, and it shows the lowest
level asked for by a block still open. So ``study.progress()`` (which asks for INFO) shows
progress although :func:`compressflow.submit` opened a WARNING block for the study's whole life:
a handler compressflow attached is not mistaken for one the user configured."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Iterator

__all__ = ["LOGGER", "ConsoleHandler", "console"]

#: the parent of every compressflow logger (``compressflow.study``, ...)
LOGGER = "compressflow"


class ConsoleHandler(logging.StreamHandler):
    """compressflow's own stderr handler. Writes to whatever ``sys.stderr`` is when a message is
    emitted, so a redirection made after the handler was attached (a notebook's, pytest's
    capture) is followed. Its level is the lowest asked for by the open :func:`console` blocks."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.asked: list[int] = []  # the level of each open console block
        self.saved = (logging.NOTSET, True)  # the logger's level and propagation before it was attached

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it
        pass


class _ConsoleFormatter(logging.Formatter):
    """The message alone, as the CLI always printed it; on a terminal, progress (below WARNING)
    starts with a carriage return so it overwrites a progress bar drawn on the same line (a
    file or a pipe gets the plain line)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return f"\r{text}" if record.levelno < logging.WARNING and _on_terminal() else text


def _on_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # no stderr (pythonw), or a closed one
        return False


_lock = threading.Lock()  # a study's block is left by its own thread, progress's by the caller's


def _apply(logger: logging.Logger, handler: ConsoleHandler) -> None:
    level = min(handler.asked)
    handler.setLevel(level)
    logger.setLevel(handler.saved[0])
    if logger.getEffectiveLevel() > level:  # the logger would drop what the handler is to show
        logger.setLevel(level)


@contextlib.contextmanager
def console(level: int = logging.INFO) -> Iterator[None]:
    """Show messages of the ``compressflow`` loggers at ``level`` and above on stderr while
    the block runs.

    Nothing changes if the ``compressflow`` logger has a handler that compressflow did not
    attach (the caller chose where its messages go). Otherwise compressflow's
    :class:`ConsoleHandler` is attached (or, if an enclosing block attached it, shared): it
    shows the lowest level asked for by the blocks open, the logger's level is lowered to
    that if it would drop such messages, and propagation to the root logger is paused so a
    root handler does not show each message a second time. The last block to end detaches
    it and restores the logger.

    Parameters
    ----------
    level : int
        ``logging.INFO`` shows progress; ``logging.WARNING`` only warnings and errors.
    """
    logger = logging.getLogger(LOGGER)
    with _lock:
        ours = [h for h in logger.handlers if isinstance(h, ConsoleHandler)]
        if len(ours) != len(logger.handlers):  # the user's handler: their choice
            handler = None
        elif ours:
            handler = ours[0]
        else:
            handler = ConsoleHandler()
            handler.setFormatter(_ConsoleFormatter())
            handler.saved = logger.level, logger.propagate
            logger.propagate = False
            logger.addHandler(handler)
        if handler is not None:
            handler.asked.append(level)
            _apply(logger, handler)
    if handler is None:
        yield
        return
    try:
        yield
    finally:
        with _lock:
            handler.asked.remove(level)
            if handler.asked:
                _apply(logger, handler)
            else:
                logger.removeHandler(handler)
                logger.setLevel(handler.saved[0])
                logger.propagate = handler.saved[1]
