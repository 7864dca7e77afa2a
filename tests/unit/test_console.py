"""Library code logs; :func:`compressflow._console.console` shows it on stderr for a person
(the CLI, ``run(show_progress=True)``, ``study.progress()``) unless the caller configured the
``compressflow`` logger."""

import logging

from compressflow._console import ConsoleHandler, console

log = logging.getLogger("compressflow.study")


def test_console_shows_progress_and_warnings_on_stderr_then_restores(capsys):
    parent = logging.getLogger("compressflow")
    before = parent.level, parent.propagate, list(parent.handlers)
    with console(logging.INFO):
        log.info("  done %d/%d", 1, 2)
        log.warning("compressflow: warning: record x is not reused")
        log.debug("not shown")
    # not a terminal: plain lines (no carriage return for a bar to be overwritten)
    assert capsys.readouterr().err == "  done 1/2\ncompressflow: warning: record x is not reused\n"
    assert (parent.level, parent.propagate, list(parent.handlers)) == before
    with console(logging.WARNING):  # --quiet / show_progress=False: warnings only
        log.info("progress")
        log.warning("a warning")
    assert capsys.readouterr().err == "a warning\n"


def test_a_quiet_block_open_for_a_study_does_not_silence_progress_asked_for_later(capsys):
    """submit() keeps a WARNING block open for the study's life; progress() then asks for INFO
    and must be shown (its handler is compressflow's own, not one the user configured), and the
    study's block, ended first by its own thread, leaves progress's block showing INFO."""
    parent = logging.getLogger("compressflow")
    before = parent.level, parent.propagate, list(parent.handlers)
    study = console(logging.WARNING)
    study.__enter__()
    log.info("before progress: not shown")
    with console(logging.INFO):
        log.info("  [teacher] done 0/1")
        study.__exit__(None, None, None)  # the study ends while progress still shows its last lines
        log.info("  [teacher] done 1/1")
        assert [type(h) for h in parent.handlers] == [ConsoleHandler]
    log.info("after: not shown")
    assert capsys.readouterr().err == "  [teacher] done 0/1\n  [teacher] done 1/1\n"
    assert (parent.level, parent.propagate, list(parent.handlers)) == before
    with console(logging.INFO), console(logging.WARNING):  # an inner quiet block does not hide progress
        log.info("shown")
    assert capsys.readouterr().err == "shown\n"


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
