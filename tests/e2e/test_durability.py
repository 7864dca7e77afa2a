"""The run directory under real runs: one run at a time (a second is refused naming the
holder), a crash while writing results keeps the previous store, and a results store is
replaced only when compressflow wrote it."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml

import compressflow
from compressflow.errors import InputError
from tests.support import tiny_spec


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "compressflow.cli", *argv], capture_output=True, text=True,
                          timeout=300)


HOLD_LOCK = """
import sys, time
from pathlib import Path
from compressflow.rundir import RunDir
with RunDir(Path(sys.argv[1])).lock():
    print("held", flush=True)
    time.sleep(300)
"""


@pytest.mark.slow
def test_a_second_run_into_a_locked_run_directory_is_refused_naming_the_holder(client, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "lock", "stages": {"w": {"op": "wait", "sweep": {"label": [0, 1]}}}}))
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = _cli("run", str(spec), "--out", str(out), "--cluster", client.scheduler.address, "--quiet")
        assert proc.returncode == 2, proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert re.fullmatch(
            rf"compressflow: error: --out: '{re.escape(str(out))}' is in use by another compressflow run "
            rf"\(pid {holder.pid} on host {re.escape(socket.gethostname())}, "
            r"started \d{4}-\d\d-\d\dT[0-9:]+\+00:00\); "
            r"wait for it to finish or choose another --out", line), line
        assert not (out / "records").exists()  # the second run did nothing
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: the kernel releases the lock with the process
        holder.wait(timeout=60)
    proc = _cli("run", str(spec), "--out", str(out), "--cluster", client.scheduler.address, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert len(list((out / "records").glob("*.json"))) == 2
    assert f"pid {holder.pid} " not in (out / ".lock").read_text()  # the new holder's details


@pytest.mark.slow
def test_two_cli_runs_at_once_the_second_is_refused(client, tmp_path):
    out = tmp_path / "run"
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "lock2", "stages": {"w": {"op": "wait", "params": {"seconds": 600}}}}))
    # the first run (its own embedded cluster) sits in its task until interrupted, whatever the machine's speed
    first = subprocess.Popen([sys.executable, "-m", "compressflow.cli", "run", str(spec), "--out", str(out), "--quiet"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not (out / "attempts").is_dir():
            time.sleep(0.05)
        second = _cli("run", str(spec), "--out", str(out), "--cluster", client.scheduler.address, "--quiet")
        assert second.returncode == 2, second.stderr
        assert f"is in use by another compressflow run (pid {first.pid} on host" in second.stderr
    finally:
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err
    (log,) = (out / "attempts").glob("*.log")
    assert sum(" start " in line for line in log.read_text().splitlines()) == 1  # started by the first run only


@pytest.mark.slow
def test_crash_while_writing_results_keeps_the_previous_store(client, tmp_path, monkeypatch):
    tree = compressflow.run(tiny_spec(), cluster=client, out=tmp_path, show_progress=False)
    import compressflow.results.store as results

    monkeypatch.setattr(results, "_variable_length_strings", lambda ds: (_ for _ in ()).throw(RuntimeError("crash")))
    with pytest.raises(RuntimeError, match="crash"):
        results.save_results(tree, tmp_path)
    monkeypatch.undo()
    reopened = compressflow.open_results(tmp_path)
    assert float(reopened["teacher"]["accuracy"]) == pytest.approx(float(tree["teacher"]["accuracy"]))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".results.zarr")]


@pytest.mark.slow
def test_a_folder_named_results_zarr_that_is_not_ours_is_refused_and_kept(client, tmp_path):
    out = tmp_path / "run"
    mine = out / "results.zarr" / "notes.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("my thesis draft")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec()))
    proc = _cli("run", str(spec), "--out", str(out), "--cluster", client.scheduler.address, "--quiet")
    assert proc.returncode == 2, proc.stderr
    errors = [ln for ln in proc.stderr.strip().splitlines() if not ln.startswith("compressflow: warning: ")]
    assert errors == [
        f"compressflow: error: --out: '{out}/results.zarr' exists and is not a compressflow results store "
        f"(no readable zarr.json at its root); it would be replaced: move it away or choose another --out"]
    assert mine.read_text() == "my thesis draft"
    assert sorted(p.name for p in (out / "results.zarr").iterdir()) == ["notes.txt"]
    assert not (out / "records").exists() and not (out / "attempts").exists()  # refused before any task ran


def test_results_store_is_replaced_only_when_compressflow_wrote_it(client, tmp_path):
    import xarray as xr

    from compressflow.results import STORE_MARKER, check_results_store, save_results

    tree = compressflow.run(tiny_spec(), cluster=client, out=tmp_path, show_progress=False)
    store = tmp_path / "results.zarr"
    with xr.open_datatree(store, engine="zarr") as disk:
        assert disk.attrs[STORE_MARKER] == 1
    # a store written before the marker existed is still recognised (and gets the marker)
    legacy = tree.copy()
    legacy.attrs.pop(STORE_MARKER, None)
    shutil.rmtree(store)
    legacy.map_over_datasets(lambda ds: ds.map(lambda v: v.astype(object) if v.dtype.kind == "U" else v)) \
        .to_zarr(store, mode="w", consolidated=True)
    with xr.open_datatree(store, engine="zarr") as disk:
        assert STORE_MARKER not in disk.attrs
    save_results(tree, tmp_path)
    # our store with someone's file put inside it: replacing it would delete the file
    stray = store / "tasks" / "README.txt"
    stray.write_text("do not delete")
    with pytest.raises(InputError, match=r"it holds 'tasks/README\.txt', which compressflow did not write"):
        save_results(tree, tmp_path)
    assert stray.read_text() == "do not delete"
    stray.unlink()
    # another program's Zarr group, a plain file and a link are not ours either
    (store / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}))
    with pytest.raises(InputError, match=r"its root has no 'compressflow_results' attribute"):
        check_results_store(tmp_path)
    shutil.rmtree(store)
    store.write_text("a file")
    with pytest.raises(InputError, match=r"\(it is a file\)"):
        save_results(tree, tmp_path)
    assert store.read_text() == "a file"
    store.unlink()
    store.mkdir()  # an empty folder holds nothing to lose
    save_results(tree, tmp_path)
    assert float(compressflow.open_results(tmp_path)["teacher"]["accuracy"]) == float(tree["teacher"]["accuracy"])
