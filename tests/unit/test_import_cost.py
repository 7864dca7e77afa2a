"""Cheap things stay cheap, as users meet them: each check runs in a fresh interpreter and reads
``sys.modules`` after it. ``import compressflow``, the CLI's help, loading every shipped spec, a
bad spec on the command line, every registry's built-in names and opening results import no
torch (seconds each time); opening results imports no Dask cluster either (``distributed``;
xarray itself may import ``dask`` to read arrays); ``python -m compressflow`` is the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import compressflow
from tests.support import ROOT

HEAVY = ("torch", "torchvision", "xarray", "distributed", "dask")


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
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


def test_import_compressflow_imports_nothing_heavy():
    assert _heavy_after("import compressflow") == []
    assert _heavy_after("import compressflow.cli") == []


def test_run_help_and_version_import_nothing_heavy():
    assert _heavy_after(_cli(["run", "--help"])) == []
    assert _heavy_after(_cli(["status", "--help"])) == []
    assert _heavy_after(_cli(["dashboard", "--help"])) == []
    assert _heavy_after(_cli(["--version"])) == []


def test_loading_every_shipped_spec_and_every_registry_imports_no_torch():
    specs = sorted(str(p) for p in (ROOT / "tasks").glob("*.yaml"))
    assert len(specs) >= 11
    code = ("import compressflow\n"
            "from compressflow.registries import BLOCKS, DATASETS, LOSSES, MODELS, OPS, SUMMARIES\n"
            f"for path in {specs!r}:\n"
            "    compressflow.load_spec(path)\n"
            "    assert 'torch' not in sys.modules, path\n"
            "assert all(len(r) for r in (BLOCKS, DATASETS, LOSSES, MODELS, OPS, SUMMARIES))")
    heavy = _heavy_after(code)
    assert "torch" not in heavy and "torchvision" not in heavy and "distributed" not in heavy, heavy


def test_a_bad_spec_on_the_command_line_imports_no_torch(tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("name: x\nstages: {teacher: [\n")
    wrong = tmp_path / "wrong.yaml"  # parses, and is refused by the checks (an op's parameter)
    wrong.write_text("name: x\nstages: {teacher: {op: train, params: {model: resnt18}}}\n")
    for bad in (typo, wrong):
        code = ("from compressflow.cli import main\n"
                f"assert main(['run', {str(bad)!r}]) == 2")
        heavy = _heavy_after(code)
        assert "torch" not in heavy and "distributed" not in heavy, (bad.name, heavy)


def test_opening_results_imports_neither_torch_nor_distributed(tmp_path):
    import xarray as xr

    from compressflow.results import build_results, save_results
    from compressflow.rundir.records import LedgerEntry, Record
    from compressflow.spec import load_spec

    spec = load_spec({"name": "opened", "stages": {"w": {"op": "wait"}}})

    class Node:
        key, point = "wait-0", {}

    entry = LedgerEntry("wait-0", "w", "wait", {}, status="ok", start=0.0, end=1.0, energy={"energy_kwh": 1e-6},
                        record=Record(xr.Dataset({"elapsed_s": 0.5})))
    save_results(build_results(spec, {"w": [Node()]}, {"wait-0": entry}), tmp_path)
    code = ("from compressflow import open_results\n"
            f"tree = open_results({str(tmp_path)!r})\n"
            "print('stage:' + str(tree['tasks']['stage'].values[0]))")
    heavy = _heavy_after(code)
    assert not {"torch", "torchvision", "distributed"} & set(heavy), heavy


def test_public_names_resolve_lazily_and_dir_lists_them():
    names = set(compressflow.__all__)
    assert names <= set(dir(compressflow))
    from compressflow.api.runner import run
    from compressflow.rundir.records import Record

    assert compressflow.run is run and compressflow.Record is Record
    from compressflow.engine.cluster import local_cluster  # what the notebooks start their cluster with

    assert compressflow.local_cluster is local_cluster
    with pytest.raises(AttributeError, match="^module 'compressflow' has no attribute 'nope'$"):
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


def test_list_imports_no_torch():
    code = ("import contextlib, io\nfrom compressflow.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n    assert main(['list']) == 0\n"
            "print(json.dumps(out.getvalue().splitlines()))")
    done = _python("import json, sys\n" + code + "\nprint('torch' in sys.modules)")
    assert done.returncode == 0, done.stderr
    lines, torch_loaded = done.stdout.splitlines()[-2:]
    assert json.loads(lines)[0].startswith("ops: ") and torch_loaded == "False"


def test_dashboard_serves_run_directories_without_torch_or_dask_and_stops_on_ctrl_c(tmp_path):
    import signal
    import urllib.request

    from tests.support.records import finished_record

    finished_record(tmp_path / "run", accuracy=0.75)
    code = ("import sys\nfrom compressflow.cli import main\n"
            f"code = main(['dashboard', {str(tmp_path / 'run')!r}])\n"
            f"print('heavy:' + ','.join(m for m in {HEAVY!r} if m in sys.modules), flush=True)\nsys.exit(code)")
    opened = tmp_path / "opened.txt"  # the "browser" it opens ($BROWSER, as Python's webbrowser reads it)
    browser = f"{sys.executable} -c \"import sys; open({str(opened)!r}, 'w').write(sys.argv[1])\" %s"
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               "BROWSER": browser}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=environ, cwd=ROOT)
    try:
        line = proc.stdout.readline()  # printed once the server listens
        assert line.startswith("compressflow dashboard: http://127.0.0.1:") and "(1 run directory)" in line, line
        url = line.split()[2]
        with urllib.request.urlopen(f"{url}/data.json", timeout=10) as r:
            data = json.loads(r.read())
        assert [p["accuracy"] for p in data["scatter"]] == [0.75] and data["rows"][0][:2] == ["teacher", "1"]
        assert opened.read_text() == url
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130 and err.strip() == "compressflow: dashboard stopped", err
    heavy = out.strip().removeprefix("heavy:").split(",")
    assert not {"torch", "torchvision", "distributed"} & set(heavy), heavy
