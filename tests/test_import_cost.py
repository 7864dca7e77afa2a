"""``import compressflow`` and the CLI's cheap answers do not import torch (seconds each call),
and ``python -m compressflow`` is the CLI. Each check runs in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import compressflow

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "xarray", "distributed")


def _python(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               **(env or {})}
    return subprocess.run([sys.executable, *(["-c", code] if code else []), *args], capture_output=True, text=True,
                          env=environ, timeout=120, cwd=ROOT)


def _heavy_after(statement: str) -> list[str]:
    """The heavy modules imported after running ``statement`` in a fresh interpreter."""
    code = (f"import sys\n{statement}\n"
            f"print('heavy:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))")
    done = _python(code)
    assert done.returncode == 0, done.stderr
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("heavy:")]
    return [m for m in line.removeprefix("heavy:").split(",") if m]


def _cli(argv: list[str]) -> str:
    return ("from compressflow.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit as exc:\n    assert exc.code in (0, None), exc.code")


def test_import_compressflow_imports_no_torch():
    assert _heavy_after("import compressflow") == []
    assert _heavy_after("import compressflow.cli") == []


def test_run_help_and_version_import_no_torch():
    assert _heavy_after(_cli(["run", "--help"])) == []
    assert _heavy_after(_cli(["status", "--help"])) == []
    assert _heavy_after(_cli(["--version"])) == []


def test_spec_that_does_not_parse_imports_no_torch(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("name: x\nstages: {teacher: [\n")
    code = ("from compressflow.cli import main\n"
            f"assert main(['run', {str(bad)!r}]) == 2")
    assert "torch" not in _heavy_after(code)


def test_public_names_resolve_lazily_and_dir_lists_them():
    names = set(compressflow.__all__)
    assert names <= set(dir(compressflow))
    from compressflow.engine.records import Record
    from compressflow.engine.runner import run

    assert compressflow.run is run and compressflow.Record is Record
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        compressflow.nope  # noqa: B018
    from compressflow import registries

    assert compressflow.OPS is registries.OPS and compressflow.MODELS is registries.MODELS
    assert all(getattr(compressflow, name) is not None for name in compressflow.__all__)


def test_version_and_python_dash_m():
    done = _python("", "-m", "compressflow", "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"compressflow {compressflow.__version__}"
    done = _python("", "-m", "compressflow", "run")
    assert done.returncode == 2 and "usage: compressflow run" in done.stderr  # argparse's own exit code
