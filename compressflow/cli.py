"""``compressflow run / report / list``.

Exit codes: 0 success; 1 some tasks failed (everything else is still written); 2 bad input
(a one-line message, no traceback, nothing computed is deleted); 130 interrupted."""

from __future__ import annotations

import argparse
import functools
import sys
import warnings
from collections.abc import Sequence

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="compressflow", description="Model-compression studies as Dask task graphs.")
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
    sub.add_parser("list", help="list registered ops, models, datasets and losses")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from compressflow.errors import InputError

    try:
        with warnings.catch_warnings():
            warnings.showwarning = functools.partial(_show_warning, warnings.showwarning)
            return {"run": _run, "report": _report, "list": _list}[args.command](args)
    except InputError as exc:
        print(f"compressflow: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "compressflow: interrupted; finished tasks are kept under the run directory's records/ "
            "and are reused when you run the same spec with the same --out",
            file=sys.stderr,
        )
        return 130


def _show_warning(previous, message, category, filename, lineno, file=None, line=None) -> None:
    """A spec warning as one ``compressflow: warning:`` line; any other warning as Python shows it."""
    from compressflow.errors import SpecWarning

    if issubclass(category, SpecWarning):
        print(f"compressflow: warning: {message}", file=sys.stderr)
    else:
        previous(message, category, filename, lineno, file, line)


def _run(args: argparse.Namespace) -> int:
    from compressflow.results import summary_table
    from compressflow.engine.runner import run
    from compressflow.plugins import import_plugins

    plugins = import_plugins(args.plugin, field="--plugin")  # so a bad one is named --plugin
    tree = run(args.spec, cluster=args.cluster, out=args.out, plugins=plugins, show_progress=not args.quiet)
    out = args.out or f"runs/{tree.attrs['name']}"
    print(summary_table(tree))
    print(f"results: {out}/results.zarr")
    ledger = tree["tasks"]
    failed = [(str(k), str(s), str(st), str(e)) for k, s, st, e in zip(
        ledger.task.values, ledger.stage.values, ledger.status.values, ledger.error.values) if st != "ok"]
    for key, stage, status, error in failed:
        print(f"compressflow: task {key} of stage {stage!r} {status}: {error}", file=sys.stderr)
    return 1 if failed else 0


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


def _list(args: argparse.Namespace) -> int:
    from compressflow.registries import DATASETS, LOSSES, MODELS, STAGES

    for title, reg in (("ops", STAGES), ("models", MODELS), ("datasets", DATASETS), ("losses", LOSSES)):
        print(f"{title}: {', '.join(reg.list()) or '-'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
