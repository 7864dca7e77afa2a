"""Task keys across real runs: editing a data option the dataset ignores reruns nothing, and
bumping an op's code version reruns exactly that op and what depends on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import compressflow
import compressflow._registry
import compressflow.engine.keys
from compressflow.registries import OPS
from tests.support import tiny_spec


def _starts(out: Path) -> dict[str, int]:
    """Task key -> how many times it was started in ``out`` (start entries of its attempts log)."""
    from compressflow.rundir.attempts import parse_attempts

    return {p.stem: len(parse_attempts(p.read_text().splitlines())) for p in (out / "attempts").glob("*.log")}


@pytest.mark.slow
def test_editing_an_ignored_data_option_reruns_nothing(client, tmp_path):
    spec = tiny_spec()
    first = compressflow.run(spec, cluster=client, out=tmp_path, show_progress=False)
    spec["data"].update(num_samples=40, num_classes=4, root=str(tmp_path / "no-such-dir"))
    again = compressflow.run(spec, cluster=client, out=tmp_path, show_progress=False)
    keys = list(first["tasks"]["task"].values)
    assert list(again["tasks"]["task"].values) == keys and len(keys) == 2
    assert (again["tasks"]["status"] == "ok").all()
    assert _starts(tmp_path) == dict.fromkeys(keys, 1)  # every record reused, none started again
    np.testing.assert_array_equal(again["test"]["accuracy"].values, first["test"]["accuracy"].values)


@pytest.mark.slow
def test_bumping_an_op_version_reruns_exactly_it_and_downstream(client, tmp_path, monkeypatch):
    spec = tiny_spec()
    spec["stages"]["other"] = {"op": "wait", "sweep": {"label": [0, 1]}}

    def run() -> dict[str, set[str]]:
        before = _starts(tmp_path)
        tree = compressflow.run(spec, cluster=client, out=tmp_path, show_progress=False)
        ledger = tree["tasks"].to_dataset()
        assert (ledger.status == "ok").all()
        started = {k for k, n in _starts(tmp_path).items() if n > before.get(k, 0)}
        return {str(s) for s in ledger.stage.sel(task=sorted(started)).values} if started else set()

    assert run() == {"teacher", "test", "other"}
    monkeypatch.setitem(OPS._info["evaluate"], "version", 2)
    assert run() == {"test"}  # the trained teacher and the wait tasks are reused
    monkeypatch.setitem(OPS._info["train"], "version", 2)
    assert run() == {"teacher", "test"}  # evaluate reruns because its input did
    assert run() == set()
    assert all(n == 1 for n in _starts(tmp_path).values())  # nothing ever ran twice under one key
