"""``compressflow dashboard OUT [OUT ...]``: the study page served from run directories by a
small tornado server of its own, after the study's scheduler is gone (:mod:`.offline` reads
them). The page, ``data.json`` and BokehJS (from the bokeh package: the page works offline)
are served under ``/compressflow`` as on a scheduler's dashboard; ``?study=ID`` picks a run
directory (the first by default; the links at the top of the page name the others).

Examples
--------
>>> board = RunDirBoard(["runs/quickstart", "runs/stkd"])  # doctest: +SKIP
>>> server = DashboardServer(board)  # binds 127.0.0.1 on a free port  # doctest: +SKIP
>>> print(server.url)  # doctest: +SKIP
http://127.0.0.1:41235/compressflow
>>> server.run()  # until server.stop() (from another thread) or Ctrl-C  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import sys
import threading
from typing import Any

from compressflow.dashboard._page import PATH, bokeh_static
from compressflow.dashboard.offline import RunDirBoard
from compressflow.errors import InputError

__all__ = ["DashboardServer", "can_open_browser", "make_app"]


def can_open_browser() -> bool:
    """Whether a browser can show the page here: ``$BROWSER`` is set, or a desktop session
    runs (macOS, Windows, or ``$DISPLAY`` / ``$WAYLAND_DISPLAY``). Over SSH without either,
    Python's :mod:`webbrowser` would start a text browser in the terminal, before the server
    serves its first page."""
    if os.environ.get("BROWSER") or sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def make_app(board: RunDirBoard) -> Any:
    """The tornado application: ``/`` redirects to ``/compressflow`` (the page),
    ``/compressflow/data.json`` (what it polls) and ``/compressflow/static/`` (BokehJS)."""
    from tornado import web

    class _Handler(web.RequestHandler):
        def set_default_headers(self) -> None:
            self.set_header("Cache-Control", "no-store")

        def snapshot(self) -> dict[str, Any]:
            return board.snapshot(self.get_argument("study", None))

    class PageHandler(_Handler):
        def get(self) -> None:
            from compressflow.dashboard._page import page

            if self.request.path.endswith("/"):  # the page's relative links assume no trailing slash
                self.redirect(f"/{PATH}" + (f"?{self.request.query}" if self.request.query else ""))
                return
            self.write(page(self.snapshot(), self.request.path, live=False))

    class DataHandler(_Handler):
        def get(self) -> None:
            from compressflow.dashboard._page import payload

            self.set_header("Content-Type", "application/json")
            self.write(json.dumps(payload(self.snapshot())))

    return web.Application([
        (r"/", web.RedirectHandler, {"url": f"/{PATH}"}),
        (rf"/{PATH}/?", PageHandler),
        (rf"/{PATH}/data\.json", DataHandler),
        (rf"/{PATH}/static/(.*)", web.StaticFileHandler, {"path": bokeh_static()}),
    ])


class DashboardServer:
    """The page of ``board``'s run directories on ``host``:``port``, bound at once (so a port
    in use is an error before anything is printed) and served by :meth:`run`.

    Parameters
    ----------
    board : RunDirBoard
        The run directories.
    host : str
        The address to listen on: ``127.0.0.1`` (this machine only) by default; ``0.0.0.0``
        shows the results to every machine that can reach this one.
    port : int
        0 (the default) for a free port.

    Raises
    ------
    InputError
        ``--port`` out of range or in use, ``--host`` not an address of this machine.
    """

    def __init__(self, board: RunDirBoard, host: str = "127.0.0.1", port: int = 0) -> None:
        from tornado.netutil import bind_sockets

        if not 0 <= port <= 65535:
            raise InputError(f"--port: {port} is not a port number; give 1 to 65535, or 0 for a free one")
        try:
            self._sockets = bind_sockets(port, address=host)
        except socket.gaierror as exc:
            raise InputError(f"--host: {host!r} is not an address of this machine ({exc.strerror}); give e.g. "
                             f"127.0.0.1 (the default) or 0.0.0.0 (every interface)") from None
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                raise InputError(f"--host: cannot listen on {host!r} ({exc.strerror}); give an address of this "
                                 f"machine, e.g. 127.0.0.1 (the default) or 0.0.0.0 (every interface)") from None
            raise InputError(f"--port: cannot listen on port {port} ({exc.strerror}); choose another, or --port 0 "
                             f"for a free one") from None
        self.board = board
        self.port = int(self._sockets[0].getsockname()[1])
        shown = socket.gethostname() if host in ("", "0.0.0.0", "::") else host
        self.url = f"http://{f'[{shown}]' if ':' in shown else shown}:{self.port}/{PATH}"
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._stop_asked = False

    def run(self) -> None:
        """Serve until :meth:`stop` is called (from any thread) or, in the main thread, Ctrl-C
        (``KeyboardInterrupt`` is raised once the server has closed its sockets)."""
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        from tornado.httpserver import HTTPServer

        server = HTTPServer(make_app(self.board))
        server.add_sockets(self._sockets)
        self._loop, self._stopped = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()
        if self._stop_asked:  # after _ready: a stop() that saw it unset set this flag before
            self._stopped.set()
        try:
            await self._stopped.wait()
        finally:
            server.stop()  # closes the listening sockets
            await server.close_all_connections()

    def stop(self) -> None:
        """Stop :meth:`run` (thread-safe; before it started: it returns at once)."""
        self._stop_asked = True
        if self._ready.is_set() and self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
