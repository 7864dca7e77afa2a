"""The package type-checks: ``python -m mypy`` (configured in pyproject.toml's ``[tool.mypy]``)
reports no error over compressflow/."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a cold mypy run over the package (torch, xarray, pydantic stubs) takes minutes
def test_mypy_reports_no_errors():
    pytest.importorskip("mypy", reason="mypy is in the test extra: pip install -e '.[test]'")
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"mypy exit {proc.returncode}:\n{proc.stdout}{proc.stderr}"
