"""Showing a :class:`~compressflow.api.study.Study`'s progress where its user is: an ipywidgets
display per stage in Jupyter (kept up to date by a thread while the notebook goes on), a bar on a
terminal, log lines elsewhere (CI, batch jobs). All three read :meth:`Study.status`, so they
label reused tasks apart from those that ran."""

from __future__ import annotations

import logging
import sys
import threading
from typing import TYPE_CHECKING, Protocol

from compressflow.engine.status import study_line

if TYPE_CHECKING:
    from compressflow.engine.status import StageStatus
    from compressflow.spec import PipelineSpec


class Study(Protocol):
    """What progress reads of a :class:`~compressflow.api.study.Study`."""

    id: str
    spec: PipelineSpec
    page: str | None
    dashboard_link: str | None

    @property
    def state(self) -> str: ...

    def status(self) -> list[StageStatus]: ...

    def wait(self, timeout: float | None = None) -> bool: ...

__all__ = ["in_jupyter", "show_progress", "stage_line"]

log = logging.getLogger("compressflow.study")

#: seconds between refreshes of the widget or bar
REFRESH_S = 0.5


def in_jupyter() -> bool:
    """True inside a Jupyter kernel (a widget can be displayed)."""
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ip = shell.get_ipython()
    return ip is not None and "IPKernelApp" in getattr(ip, "config", {})


def stage_line(row: StageStatus) -> str:
    """``done 3/8 · running 2 · pending 3 · reused 1 · failed 0 · 0.0012 kWh``: one stage's
    progress (done counts reused, ran, failed and cancelled tasks)."""
    finished = row.reused + row.ran + row.failed + row.cancelled
    parts = [f"done {finished}/{row.tasks}", f"running {row.running}", f"pending {row.pending}",
             f"reused {row.reused}", f"ran {row.ran}"]
    if row.failed:
        parts.append(f"failed {row.failed}")
    if row.cancelled:
        parts.append(f"cancelled {row.cancelled}")
    parts.append(f"{row.energy_kwh:.3g} kWh")
    return " · ".join(parts)


def show_progress(study: Study) -> None:
    """In Jupyter, display the widget (once) and return at once; elsewhere block until the
    study ends, drawing a bar on a terminal (stderr) or logging a line per stage whenever its
    counts change (shown on stderr, a file or pipe included, unless you attached your own
    handler to the ``compressflow`` logger)."""
    if in_jupyter():
        try:
            return _widget(study)
        except ImportError:
            log.warning("compressflow: install ipywidgets for a progress widget (pip install "
                        "'compressflow[jupyter]'); showing text lines instead")
    if sys.stderr.isatty():
        _bar(study)
    else:
        from compressflow._console import console

        with console(logging.INFO):  # asked for: shown even if the study itself logs quietly
            _lines(study)
    return None


def _widget(study: Study) -> None:
    """Display the widget and keep it up to date. Nothing is returned: a returned widget would
    be displayed a second time when ``study.progress()`` ends a cell."""
    import ipywidgets as w
    from IPython.display import display

    rows = study.status()
    bars = {r.stage: w.IntProgress(value=0, min=0, max=max(r.tasks, 1), description=r.stage,
                                   layout=w.Layout(width="45%"), style={"description_width": "initial"})
            for r in rows}
    texts = {r.stage: w.HTML() for r in rows}
    head = w.HTML()
    box = w.VBox([head, *(w.HBox([bars[r.stage], texts[r.stage]]) for r in rows)])

    def refresh() -> None:
        for r in study.status():
            bars[r.stage].value = r.reused + r.ran + r.failed + r.cancelled
            bars[r.stage].bar_style = "danger" if r.failed else "warning" if r.cancelled else \
                "success" if r.pending == r.running == 0 else "info"
            texts[r.stage].value = f"<code>{stage_line(r)}</code>"
        link = study.page or study.dashboard_link or ""
        head.value = (f"<b>{study.spec.name}</b>: {study.state}"
                      + (f' · <a href="{link}" target="_blank">dashboard</a>' if link else ""))

    def loop() -> None:
        while not study.wait(REFRESH_S):
            refresh()
        refresh()

    refresh()
    threading.Thread(target=loop, name=f"compressflow-widget-{study.id}", daemon=True).start()
    display(box)


def _head(study: Study) -> str:
    """``compressflow: study 'quickstart': 2 stages; dashboard http://...``: the first line of
    text progress."""
    link = study.page or study.dashboard_link
    return f"compressflow: study {study.spec.name!r}: {len(study.status())} stages" + (f"; dashboard {link}" if link else "")


def _bar(study: Study, width: int = 30) -> None:
    def draw() -> None:
        rows = study.status()
        total = sum(r.tasks for r in rows)
        finished = sum(r.reused + r.ran + r.failed + r.cancelled for r in rows)
        running = sum(r.running for r in rows)
        reused = sum(r.reused for r in rows)
        kwh = sum(r.energy_kwh for r in rows)
        full = round(width * finished / max(total, 1))
        sys.stderr.write(f"\r[{'#' * full}{'.' * (width - full)}] {finished}/{total} done · {running} running · "
                         f"{reused} reused · {kwh:.3g} kWh ")
        sys.stderr.flush()

    while not study.wait(REFRESH_S):
        draw()
    draw()
    sys.stderr.write("\n")


def _lines(study: Study) -> None:
    shown: dict[str, str] = {}
    log.info("%s", _head(study))

    def emit() -> None:
        for r in study.status():
            line = stage_line(r)
            if shown.get(r.stage) != line:
                shown[r.stage] = line
                log.info("  [%s] %s", r.stage, line)

    while not study.wait(REFRESH_S * 4):
        emit()
    emit()
    log.info("%s", study_line(study.spec.name, study.state, study.status()))
