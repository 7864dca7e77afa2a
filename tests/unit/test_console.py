"""Library code logs; :func:`compressflow._console.console` shows it on stderr for a person
(the CLI, ``run(show_progress=True)``) unless the caller configured the ``compressflow`` logger."""

import logging

from compressflow._console import console

log = logging.getLogger("compressflow.study")


def test_console_shows_progress_and_warnings_on_stderr_then_restores(capsys):
    parent = logging.getLogger("compressflow")
    before = parent.level, parent.propagate, list(parent.handlers)
    with console(logging.INFO):
        log.info("  done %d/%d", 1, 2)
        log.warning("compressflow: warning: record x is not reused")
        log.debug("not shown")
    assert capsys.readouterr().err == "\r  done 1/2\ncompressflow: warning: record x is not reused\n"
    assert (parent.level, parent.propagate, list(parent.handlers)) == before
    with console(logging.WARNING):  # --quiet / show_progress=False: warnings only
        log.info("progress")
        log.warning("a warning")
    assert capsys.readouterr().err == "a warning\n"


def test_a_handler_the_caller_attached_gets_the_messages_instead(capsys):
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    parent = logging.getLogger("compressflow")
    handler = Keep()
    parent.addHandler(handler)
    parent.setLevel(logging.INFO)
    try:
        with console(logging.INFO):
            log.info("progress")
    finally:
        parent.removeHandler(handler)
        parent.setLevel(logging.NOTSET)
    assert seen == ["progress"] and capsys.readouterr().err == ""
