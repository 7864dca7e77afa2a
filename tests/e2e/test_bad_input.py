"""The bad-input matrix: every case in ``tests/bad_input/*.yaml`` is a piece of bad input that
must end in exactly one error line naming the field, exit code 2, no traceback, and no file
that existed before the command changed or lost.

A case is data (see ``tests/bad_input/*.yaml``):

``id``
    unique name.
``spec`` / ``spec_text`` / ``spec_bytes`` / ``spec_path``
    a mapping deep-merged onto :data:`BASE` (``null`` deletes a key), the spec file's exact
    text, its raw bytes (YAML ``!!binary``), or a path given as is instead of a written file.
``command``, ``args``
    the CLI command (default ``run``; ``report`` gets the run directory; ``status`` the spec
    and ``--out`` as ``run`` does) and extra arguments.
``cluster`` / ``cluster_arg``
    a cluster spec mapping written to ``{tmp}/cluster.yaml`` (or ``cluster_text``, its exact
    text), or a string passed verbatim as ``--cluster`` (``{scheduler}``: the address of the
    tests' shared cluster).
``setup``
    a function of ``tests/bad_input/setups.py`` run first.
``expect``, ``exit``
    a regex searched in the error line; the exit code (default 2).

Every string may use ``{tmp}`` (the case's directory), ``{out}`` (its run directory) and
``{home}`` (the user's home directory).
"""

from __future__ import annotations

import copy
import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from compressflow.cli import main
from tests.bad_input.setups import SETUPS
from tests.support import ROOT

HERE = ROOT / "tests" / "bad_input"

BASE: dict[str, Any] = {
    "name": "tiny",
    "data": {"dataset": "digits", "image_size": 8, "channels": 1},
    "stages": {
        "teacher": {"op": "train", "params": {"model": "resnet18", "width": 0.125, "epochs": 1, "batch_size": 128}},
        "test": {"op": "evaluate", "needs": {"model": "teacher"}},
    },
}

FIELDS = {"id", "spec", "spec_text", "spec_bytes", "spec_path", "command", "args", "cluster", "cluster_text",
          "cluster_arg", "setup", "expect", "exit"}


def load_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for path in sorted(HERE.glob("*.yaml")):
        for case in yaml.safe_load(path.read_text(encoding="utf-8")) or []:
            unknown = set(case) - FIELDS
            if unknown or "id" not in case or "expect" not in case:
                raise ValueError(f"{path.name}: bad case {case.get('id')!r}: unknown {sorted(unknown)} or no id/expect")
            cases.append({**case, "file": path.name})
    ids = [c["id"] for c in cases]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"duplicate bad-input case ids: {dupes}")
    return cases

CASES = load_cases()


def merge(base: Any, patch: Any) -> Any:
    """Deep-merge ``patch`` onto ``base``; a ``None`` value deletes the key."""
    if not isinstance(base, dict) or not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


def fill(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        for name, text in names.items():
            value = value.replace("{" + name + "}", text)
        return value
    if isinstance(value, list):
        return [fill(v, names) for v in value]
    if isinstance(value, dict):
        return {fill(k, names): fill(v, names) for k, v in value.items()}
    return value


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def argv_for(case: dict[str, Any], tmp: Path, out: Path, scheduler: str = "") -> list[str]:
    names = {"tmp": str(tmp), "out": str(out), "scheduler": scheduler, "home": str(Path.home())}
    command = case.get("command", "run")
    if command not in ("run", "status"):
        return [command, *fill(case.get("args", [str(out)]), names)]
    if "spec_path" in case:
        spec_path = fill(case["spec_path"], names)
    else:
        spec_file = tmp / "spec.yaml"
        if "spec_bytes" in case:
            spec_file.write_bytes(case["spec_bytes"])
        elif "spec_text" in case:
            spec_file.write_text(fill(case["spec_text"], names), encoding="utf-8")
        else:
            spec_file.write_text(yaml.safe_dump(fill(merge(BASE, case.get("spec") or {}), names)), encoding="utf-8")
        spec_path = str(spec_file)
    if command == "status":  # the spec is written as for run; no cluster
        return ["status", spec_path, "--out", str(out), *fill(case.get("args", []), names)]
    argv = ["run", spec_path, "--out", str(out), "--quiet"]
    if "cluster" in case or "cluster_text" in case:
        cluster_file = tmp / "cluster.yaml"
        text = case["cluster_text"] if "cluster_text" in case else yaml.safe_dump(case["cluster"])
        cluster_file.write_text(fill(text, names), encoding="utf-8")
        argv += ["--cluster", str(cluster_file)]
    elif "cluster_arg" in case:
        argv += ["--cluster", fill(case["cluster_arg"], names)]
    return argv + fill(case.get("args", []), names)


def test_matrix_covers_every_door():
    """The issue asks for 100 cases or more; each area of input keeps its own file."""
    assert len(CASES) >= 100, len(CASES)
    files = {c["file"] for c in CASES}
    assert {"spec.yaml", "cluster.yaml", "data.yaml", "rundir.yaml", "search.yaml"} <= files, files


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_input(case, tmp_path, capsys, request):
    tmp = tmp_path / "case"
    tmp.mkdir()
    out = tmp / "run"
    if case.get("setup"):
        SETUPS[case["setup"]](tmp, out)
    # "{scheduler}": the tests' shared cluster, for cases whose input a worker reads
    scheduler = request.getfixturevalue("client").scheduler.address if "{scheduler}" in str(case) else ""
    argv = argv_for(case, tmp, out, scheduler)
    before = snapshot(tmp)
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("compressflow: error: ")]
    assert code == case.get("exit", 2), f"exit {code}, stderr:\n{err}"
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"expected one error line, got:\n{err}"
    message = lines[0].removeprefix("compressflow: error: ")
    assert re.search(case["expect"], message), f"{message!r} does not match {case['expect']!r}"
    after = snapshot(tmp)
    lost = {name for name, digest in before.items() if after.get(name) != digest}
    assert not lost, f"files changed or lost: {sorted(lost)}"
