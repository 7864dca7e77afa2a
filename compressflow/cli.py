"""``compressflow run / report / list / status / dashboard``.

Exit codes: 0 success; 1 some tasks failed (everything else is still written); 2 bad input
(a one-line message, no traceback, nothing computed is deleted), also a full disk under the
run directory (finished tasks are kept); 130 interrupted (Ctrl-C); 143 terminated (SIGTERM, as
sent by SLURM, systemd or ``timeout``: handled as a first Ctrl-C, so what finished is written).

Each subcommand imports what it needs when it runs, so ``--help``, ``--version`` and a spec
that does not parse answer without importing torch, xarray or distributed (seconds each)."""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["main"]

#: the arguments that name files or folders (a NUL byte in one is refused in one line)
_PATHS = {"spec": "spec", "out": "--out", "cluster": "--cluster", "plugin": "--plugin"}


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that it takes the path of a first Ctrl-C (cancel,
    wait a bounded grace period for running tasks, write what finished)."""


def _parser() -> argparse.ArgumentParser:
    from compressflow import __version__

    p = argparse.ArgumentParser(prog="compressflow", description="Model-compression studies as Dask task graphs.")
    p.add_argument("--version", action="version", version=f"compressflow {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a pipeline spec and write DIR/results.zarr")
    r.add_argument("spec", help="pipeline spec YAML, e.g. tasks/quickstart.yaml")
    r.add_argument("--cluster", default=None, help="cluster spec YAML or tcp://host:port (default: embedded LocalCluster)")
    r.add_argument("--out", default=None, help="run directory (default: runs/<spec name>)")
    r.add_argument("--quiet", action="store_true", help="no progress output")
    r.add_argument("--plugin", action="append", default=[], metavar="PATH_OR_MODULE",
                   help="a .py file, package folder or module of your own ops/models, imported here and on "
                        "every worker (repeatable)")
    rep = sub.add_parser("report", help="write DIR/report/report.md (+ plots) and print it")
    rep.add_argument("out", help="run directory (holding results.zarr)")
    st = sub.add_parser("status", help="per-stage task counts of a study from its run directory (no cluster needed)")
    st.add_argument("spec", help="pipeline spec YAML of the study")
    st.add_argument("--out", default=None, help="its run directory (default: runs/<spec name>)")
    st.add_argument("--plugin", action="append", default=[], metavar="PATH_OR_MODULE",
                    help="a .py file, package folder or module of your own ops, as given to run (repeatable)")
    db = sub.add_parser("dashboard", help="serve the study page of finished (or still running) run directories, "
                                          "several side by side, without a cluster",
                        description="Serve the study page of the Dask dashboard from run directories, after their "
                                    "studies ended: tasks by state, kWh and gCO2 per stage, accuracy vs CO2, per-epoch "
                                    "curves; one study per OUT (the links at the top switch). Reads OUT/results.zarr "
                                    "and the finished records (a run still going shows its tasks as they finish). "
                                    "Ctrl-C stops it.")
    db.add_argument("outs", nargs="+", metavar="OUT", help="run directory (the --out of compressflow run)")
    db.add_argument("--port", type=int, default=0, help="port to listen on (default: 0, a free port)")
    db.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 shows the results to "
                         "every machine that can reach this one)")
    db.add_argument("--no-browser", action="store_true",
                    help="print the page's URL without opening a browser (one is opened only where it can be shown: "
                         "a desktop session, or $BROWSER)")
    ls = sub.add_parser("list", help="list registered ops, models, datasets and losses, or one op's parameters")
    ls.add_argument("op", nargs="?", default=None, help="an op name: print its parameters, types and defaults")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from compressflow._console import console
    from compressflow.errors import InputError

    try:
        _check_paths(args)
        with warnings.catch_warnings(), console(logging.WARNING if getattr(args, "quiet", False) else logging.INFO):
            warnings.showwarning = functools.partial(_show_warning, warnings.showwarning)
            return {"run": _run, "report": _report, "list": _list, "status": _status,
                    "dashboard": _dashboard}[args.command](args)
    except InputError as exc:
        print(f"compressflow: error: {_escaped(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        how = "terminated (SIGTERM)" if isinstance(exc, _Terminated) else "interrupted"
        print(f"compressflow: {how}; finished tasks are kept under the run directory's records/ and are reused "
              f"when you run the same spec with the same --out", file=sys.stderr)
        return 143 if isinstance(exc, _Terminated) else 130


def _check_paths(args: argparse.Namespace) -> None:
    """Refuse a path argument holding a NUL byte, which no file name can (Python raises ValueError)."""
    from compressflow.errors import InputError, printable

    for attr, field in {**_PATHS, **({"out": "report"} if args.command == "report" else {})}.items():
        value = getattr(args, attr, None)
        for path in value if isinstance(value, list) else [value]:
            if isinstance(path, str) and "\0" in path:
                raise InputError(f"{field}: {printable(path)} holds a NUL byte, which no path can; give a file name "
                                 f"without it")


def _escaped(text: str) -> str:
    """``text`` with every control character escaped (``\\x00``, ``\\n``): an error stays one line
    that a terminal shows as it is, whatever a message quoted."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`_Terminated` in the main thread (a handler can
    only be set there); the previous handler is restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(signum: int, frame: Any) -> None:
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _show_warning(previous, message, category, filename, lineno, file=None, line=None) -> None:
    """A spec warning as one ``compressflow: warning:`` line; any other warning as Python shows it."""
    from compressflow.errors import SpecWarning

    if issubclass(category, SpecWarning):
        print(f"compressflow: warning: {_escaped(str(message))}", file=sys.stderr)
    else:
        previous(message, category, filename, lineno, file, line)


def _run(args: argparse.Namespace) -> int:
    with _sigterm_as_interrupt():
        return _run_study(args)


def _run_study(args: argparse.Namespace) -> int:
    from compressflow.errors import DiskFull
    from compressflow.plugins import import_plugins
    from compressflow.spec import load_spec

    plugins = import_plugins(args.plugin, field="--plugin")  # so a bad one is named --plugin
    spec = load_spec(args.spec)  # a bad spec is refused before the engine (distributed, xarray, torch) is imported
    from compressflow.api.runner import run
    from compressflow.rundir import RunDir

    run_dir = RunDir(args.out) if args.out is not None else RunDir.default(spec.name)
    try:
        tree = run(spec, cluster=args.cluster, out=args.out, plugins=plugins, show_progress=not args.quiet)
    except DiskFull as exc:
        if exc.results is not None:  # every task ended; only the results store did not fit: show them
            _summary(exc.results)
        raise
    return 1 if _summary(tree, written=run_dir.results) else 0


def _summary(tree: Any, written: Any = None) -> int:
    """Print the stage summary, where the results were written, the tasks line and, on stderr,
    one line per task that did not end ``ok``; return how many did not."""
    from compressflow.engine.status import status_from_ledger, tasks_line
    from compressflow.report import summary_table

    print(summary_table(tree))
    if written is not None:
        print(f"results: {written}")
    ledger = tree["tasks"]
    print(tasks_line(status_from_ledger(ledger.to_dataset())))  # as run() logs it
    failed = [(str(k), str(s), str(st), str(e)) for k, s, st, e in zip(
        ledger.task.values, ledger.stage.values, ledger.status.values, ledger.error.values) if st != "ok"]
    for key, stage, status, error in failed:
        print(f"compressflow: task {key} of stage {stage!r} {status}: {_escaped(error)}", file=sys.stderr)
    return len(failed)


def _status(args: argparse.Namespace) -> int:
    from compressflow.plugins import import_plugins
    from compressflow.spec import load_spec

    import_plugins(args.plugin, field="--plugin")
    spec = load_spec(args.spec)  # imports the spec's own plugins
    from compressflow.engine.status import format_status, status_from_rundir
    from compressflow.rundir import RunDir

    run = RunDir(args.out) if args.out is not None else RunDir.default(spec.name)
    out = run.root
    rows = status_from_rundir(spec, out)
    print(format_status(rows))
    if not out.exists():
        print(f"no run directory {str(out)!r} yet: every task is pending")
        return 0
    state = run.state()
    if state.live:
        print(f"a run is live in {str(out)!r} ({state.holder})")
    elif state.holder:
        print(f"no run is live in {str(out)!r}; the latest: {state.holder}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from compressflow.errors import InputError
    from compressflow.report import write_report
    from compressflow.results import open_results

    try:
        tree = open_results(args.out)
    except (FileNotFoundError, InputError) as exc:  # no store, or one that cannot be read (damaged, foreign)
        raise InputError(f"report: {exc}") from None
    path = write_report(tree, args.out)
    print(path.read_text())
    print(f"report: {path} and {path.with_name('report.html')}")
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    from compressflow.dashboard.offline import RunDirBoard
    from compressflow.dashboard.serve import DashboardServer, can_open_browser

    try:
        with _sigterm_as_interrupt():
            board = RunDirBoard(args.outs)  # a path that is not a run directory: one line, before it listens
            server = DashboardServer(board, args.host, args.port)
            n = len(board.sources)
            print(f"compressflow dashboard: {server.url} ({n} run director{'y' if n == 1 else 'ies'}); "
                  f"Ctrl-C stops it", flush=True)
            if not args.no_browser and can_open_browser():
                import webbrowser

                webbrowser.open(server.url)  # the server already listens: the browser's request waits for it
            server.run()
    except KeyboardInterrupt as exc:
        print("compressflow: dashboard stopped", file=sys.stderr)
        return 143 if isinstance(exc, _Terminated) else 130
    return 0


def _list(args: argparse.Namespace) -> int:
    from compressflow.errors import InputError
    from compressflow.registries import BLOCKS, DATASETS, LOSSES, MODELS, OPS

    if args.op is None:
        for title, names in (("ops", OPS.list()), ("models", MODELS.list(task="classification")),
                             ("detection models", MODELS.list(task="detection")),
                             ("datasets", DATASETS.list(task="classification")),
                             ("detection datasets", DATASETS.list(task="detection")), ("losses", LOSSES.list()),
                             ("blocks", BLOCKS.list())):
            print(f"{title}: {', '.join(names) or '-'}")
        return 0
    if args.op not in OPS:
        raise InputError(f"list: {OPS.unknown_message(args.op)}")
    print(_op_table(args.op))
    return 0


def _op_table(op: str) -> str:
    """``compressflow list OP``: the op's summary line, then one row per spec parameter (name,
    type, default, allowed range) and the inputs it takes from upstream stages (``needs``)."""
    import inspect

    from compressflow.ops.params import Shown
    from compressflow.ops.signature import stage_signature
    from compressflow.registries import OPS

    sig = stage_signature(op)
    rows = [("parameter", "type", "default", "allowed")]
    for name, info in sig.model.model_fields.items():
        default = "(required)" if info.is_required() else repr(info.default)
        shown = next((m for m in info.metadata if isinstance(m, Shown)), None)  # a registry's names, τ's forms
        allowed = ", ".join(filter(None, [_bounds_text(info.metadata), shown.allowed() if shown else ""]))
        rows.append((name, shown.type if shown else _type_text(info.annotation), default, allowed))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    doc = (inspect.getdoc(OPS.get(op)) or "").strip().split("\n\n")[0].replace("\n", " ")
    lines = [f"{op}: {doc}" if doc else op, ""]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    if sig.artifacts:
        needs = [f"{a}{'' if a in sig.required_artifacts else ' (optional)'}" for a in sig.artifacts]
        lines += ["", f"needs (upstream stages): {', '.join(needs)}"]
    return "\n".join(lines)


def _type_text(ann: Any) -> str:
    """A parameter's type as a person writes it: ``int``, ``'sgd' | 'adamw'``, ``tuple[float, ...]``."""
    import types
    import typing

    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if ann is type(None):
        return "None"
    if ann is Ellipsis:
        return "..."
    if origin is typing.Annotated:
        return _type_text(args[0])
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_text(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type_text(a) for a in args)}]"
    if isinstance(ann, type):
        return ann.__name__
    return str(ann).replace("typing.", "")


def _bounds_text(metadata: list[Any]) -> str:
    """Numeric bounds (pydantic's ``Field(ge=..., lt=...)``) as ``>= 1, < 4``."""
    ops = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    return ", ".join(f"{sign} {_number(getattr(m, attr))}" for m in metadata for attr, sign in ops.items()
                     if isinstance(getattr(m, attr, None), (int, float)))


def _number(v: float) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
