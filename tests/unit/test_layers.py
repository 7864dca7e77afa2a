"""The package's structure holds: the layers of ``pyproject.toml``'s import-linter contracts
(no layer imports one above it, no two modules of a package import each other), every built-in
op imports only the op contract (``compressflow.ops``) and the leaves, and no module is over
400 lines."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

PACKAGE = ROOT / "compressflow"
#: the op families: the modules of compressflow/ops/ that register ops
FAMILIES = ("train", "evaluate", "distill", "quantize", "blockwise", "craft", "prune", "represent", "bias", "wait",
            "objective", "synthesize", "distill_detection")
#: what a built-in op may import of compressflow: the contract, and the layers below it
ALLOWED = ("compressflow.ops", "compressflow.nn", "compressflow.data", "compressflow.metrics", "compressflow.energy",
           "compressflow.errors", "compressflow.registries", "compressflow.rundir")


def test_import_linter_contracts_are_kept():
    pytest.importorskip("importlinter", reason="import-linter is in the test extra: pip install -e '.[test]'")
    done = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                           "lint_imports_command()", "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert "Contracts: 3 kept, 0 broken." in done.stdout and done.returncode == 0, done.stdout[-3000:] + done.stderr


def _compressflow_imports(path: Path) -> set[str]:
    """Every ``compressflow...`` module a file imports, at any level (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] == "compressflow"}


@pytest.mark.parametrize("family", FAMILIES)
def test_a_built_in_op_imports_only_the_contract_and_the_leaves(family):
    imported = _compressflow_imports(PACKAGE / "ops" / f"{family}.py")
    assert "compressflow.ops" in imported  # the contract, as an op author imports it
    outside = sorted(m for m in imported if m.startswith("compressflow.ops.") or not m.startswith(ALLOWED))
    assert not outside, f"ops/{family}.py imports {outside}; import the contract from compressflow.ops"


def test_the_families_named_here_are_the_registered_ones():
    from compressflow.registries import BUILTIN_MODULES

    assert {m.rsplit(".", 1)[1] for m in BUILTIN_MODULES if m.startswith("compressflow.ops.")} == set(FAMILIES)


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in sorted(PACKAGE.rglob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long, f"split these modules (a module does one thing): {long}"
