"""Progress where the user is (compressflow.api.progress), without a cluster: a stand-in study
that has ended. Log lines when stderr is not a terminal, even while the quiet console block a
submitted study keeps open is active; the Jupyter widget displayed once, with the counts."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from compressflow._console import console
from compressflow.api.progress import _widget, show_progress
from compressflow.engine.status import StageStatus, StatusTable


class Ended:
    """A study that has ended: one stage reused, one with a task that ran and one cancelled."""

    id = "s1"
    spec = SimpleNamespace(name="tiny")
    page = None
    dashboard_link = "http://127.0.0.1:8787/status"
    state = "done"

    def status(self) -> StatusTable:
        return StatusTable([StageStatus("teacher", 1, reused=1, energy_kwh=0.002),
                            StageStatus("test", 2, ran=1, cancelled=1, energy_kwh=0.001)])

    def wait(self, timeout: float | None = None) -> bool:
        return True


def test_progress_logs_stage_lines_to_a_non_terminal_under_the_studys_quiet_block(capsys):
    with console(logging.WARNING):  # what submit(show_progress=False) keeps open until the study ends
        assert show_progress(Ended()) is None
    assert capsys.readouterr().err.splitlines() == [
        "compressflow: study 'tiny': 2 stages; dashboard http://127.0.0.1:8787/status",
        "  [teacher] done 1/1 · running 0 · pending 0 · reused 1 · ran 0 · 0.002 kWh",
        "  [test] done 2/2 · running 0 · pending 0 · reused 0 · ran 1 · cancelled 1 · 0.001 kWh",
        "compressflow: study 'tiny' done: tasks: reused 1, ran 1, cancelled 1"]


def test_the_widget_is_displayed_once_and_not_returned(capsys):
    """Outside a kernel IPython's display() prints the widget's repr: one display. A returned
    widget would be displayed again by Jupyter when ``study.progress()`` ends a cell."""
    assert _widget(Ended()) is None
    shown = capsys.readouterr().out.splitlines()
    assert len(shown) == 1 and shown[0].startswith("VBox(")
    assert "IntProgress(value=1, bar_style='success', description='teacher'" in shown[0]
    assert "IntProgress(value=2, bar_style='warning', description='test'" in shown[0]
    assert "dashboard</a>" in shown[0] and "<b>tiny</b>: done" in shown[0]


def test_a_terminal_gets_one_bar_redrawn_in_place(monkeypatch):
    """stderr a real terminal (a pseudo-terminal here): the bar, drawn over itself with ``\\r``."""
    import os
    import sys

    master, slave = os.openpty()
    try:
        with os.fdopen(slave, "w", encoding="utf-8") as tty:
            monkeypatch.setattr(sys, "stderr", tty)
            assert show_progress(Ended()) is None
        out = os.read(master, 4096).decode()
    finally:
        os.close(master)
    assert "\r[" + "#" * 30 + "] 3/3 done · 0 running · 1 reused · 0.003 kWh" in out
    assert "[teacher]" not in out  # a bar, not the log lines
