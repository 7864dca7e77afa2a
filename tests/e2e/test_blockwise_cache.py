"""A reused blockwise activation cache that went missing or changed is recomputed with a
warning on the re-run, and nothing already computed is deleted."""

from __future__ import annotations

import re
import shutil

import pytest
import yaml

import compressflow
from compressflow.cli import main
from tests.support.specs import BLOCKWISE

DATA = {"dataset": "digits", "image_size": 8, "channels": 1}


@pytest.mark.slow
def test_missing_or_corrupt_cache_on_rerun_is_recomputed_and_nothing_deleted(client, tmp_path, capsys):
    tree = compressflow.run(BLOCKWISE, cluster=client, out=tmp_path, show_progress=False)
    assert (tree["tasks"]["status"] == "ok").all()
    records = sorted((tmp_path / "records").glob("*.json"))
    store = next((tmp_path / "artifacts").rglob("*.zarr"))
    chunk = max((p for p in store.rglob("*") if p.is_file() and "train" in str(p)), key=lambda p: p.stat().st_size)
    chunk.write_bytes(chunk.read_bytes()[:-8] + b"\0" * 8)
    cache_record = next(p for p in records if p.name.startswith("activations-"))
    before = {p.name: p.stat().st_mtime_ns for p in records if p != cache_record}
    capsys.readouterr()
    tree = compressflow.run(BLOCKWISE, cluster=client, out=tmp_path, show_progress=False)
    (warning,) = [line for line in capsys.readouterr().err.splitlines() if "warning: record" in line]
    assert re.search(r"^compressflow: warning: record '.*activations-\w+\.json' of stage 'cache' is not reused "
                     r"\(zarr '.*\.zarr' does not match its recorded sha256 \(modified or torn\)\); "
                     r"the task runs again", warning), warning
    assert (tree["tasks"]["status"] == "ok").all()
    kept = tmp_path / "rejected" / cache_record.stem
    assert (kept / store.name).is_dir() and (kept / cache_record.name).is_file()  # the torn store is kept, not deleted
    assert {p.name: p.stat().st_mtime_ns for p in records if p != cache_record} == before  # only the cache re-ran
    assert cache_record.exists() and store.exists()
    # a cache that went missing: the same, and the run completes
    shutil.rmtree(store)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(BLOCKWISE))
    capsys.readouterr()
    assert main(["run", str(spec_file), "--out", str(tmp_path), "--cluster", client.scheduler_info()["address"]]) == 0
    err_text = capsys.readouterr().err
    assert re.search(r"warning: record .* \(zarr '.*' is missing\); the task runs again", err_text), err_text
    assert "Traceback" not in err_text and store.exists()
