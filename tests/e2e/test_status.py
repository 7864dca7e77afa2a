"""Status of a real run and its re-run with a stage added: the ledger's ``reused`` and the counts
of ``compressflow status``."""

from __future__ import annotations

import os

import pytest
import yaml

from compressflow.engine.status import status_from_ledger
from tests.support import tiny_spec


@pytest.mark.slow
def test_rerun_with_a_stage_added_marks_reused_tasks_and_status_counts(client, tmp_path, capsys):
    import compressflow
    from compressflow.cli import main

    out = tmp_path / "run"
    first = compressflow.run(tiny_spec(), cluster=client, out=out, show_progress=False)
    assert first["tasks"]["reused"].values.tolist() == [False, False]
    spec = tiny_spec()
    spec["stages"]["val"] = {"op": "evaluate", "needs": {"model": "teacher"}, "params": {"split": "val"}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["run", str(path), "--cluster", client.scheduler.address, "--out", str(out), "--quiet"]) == 0
    assert "tasks: reused 2, ran 1\n" in capsys.readouterr().out
    ledger = compressflow.open_results(out)["tasks"]
    assert dict(zip(ledger.stage.values.tolist(), ledger.reused.values.tolist())) == {
        "teacher": True, "test": True, "val": False}
    assert ledger["reused"].attrs["description"].startswith("the task's record came from an earlier run")
    assert [(r.stage, r.reused, r.ran) for r in status_from_ledger(ledger.to_dataset())] == [
        ("teacher", 1, 0), ("test", 1, 0), ("val", 0, 1)]
    # compressflow status after the run: the first run's tasks reused, the new stage ran
    assert main(["status", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    table = {line.split()[0]: line.split()[1:8] for line in printed[1:5]}
    assert table == {"teacher": ["1", "1", "0", "0", "0", "0", "0"], "test": ["1", "1", "0", "0", "0", "0", "0"],
                     "val": ["1", "0", "1", "0", "0", "0", "0"], "total": ["3", "2", "1", "0", "0", "0", "0"]}
    val_kwh = float(ledger.energy_kwh.sel(task=ledger.stage == "val").sum())
    assert float(printed[3].split()[-1]) == pytest.approx(val_kwh, rel=1e-2)
    # kWh is what the results cost: a reused stage shows its recorded energy, not 0
    teacher_kwh = float(ledger.energy_kwh.sel(task=ledger.stage == "teacher").sum())
    assert teacher_kwh > 0 and float(printed[1].split()[-1]) == pytest.approx(teacher_kwh, rel=1e-2)
    assert printed[-1].startswith(f"no run is live in {str(out)!r}; the latest: pid {os.getpid()} on host ")
