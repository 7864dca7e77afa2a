"""Scheduling policies applied by the runner: tasks land on the workers the policy chose."""

import json

import pytest

import compressflow
from compressflow.engine.scheduling import assign, durations_of
from compressflow.errors import InputError
from compressflow.rundir import RunDir


def wait_spec(policy, n, **scheduling):
    return {
        "name": "placement",
        "stages": {"w": {"op": "wait", "sweep": {"label": list(range(n))}, "scheduling": {"policy": policy, **scheduling}}},
    }


def known(out, stage, key_by):
    """The durations an earlier run in ``out`` recorded, as the runner reads them."""
    run = RunDir(out)
    return durations_of([run.finished(k, metrics=False) for k in run.record_keys()], stage, key_by)


def workers_by_label(tree):
    ledger = tree["tasks"].to_dataset()
    return {json.loads(p)["label"]: str(w) for p, w in zip(ledger.point.values, ledger.worker.values)}


def test_round_robin_pins_tasks_cyclically(client, tmp_path):
    tree = compressflow.run(wait_spec("round_robin", 6), cluster=client, out=tmp_path, show_progress=False)
    workers = sorted(client.scheduler_info()["workers"])
    assert workers_by_label(tree) == {i: workers[i % 2] for i in range(6)}
    assert tree["w"].attrs["scheduling_policy"] == "round_robin"


def test_bin_packing_uses_durations_of_an_earlier_run(client, tmp_path):
    # the long task is long enough that the five short ones stay shorter together even when a
    # loaded machine adds ~0.1 s to each measured duration (WFD packs by measured, not nominal, time)
    seconds = [1.0, 0.1, 0.09, 0.08, 0.07, 0.02]
    stage = {"op": "wait", "sweep": {"seconds": seconds}}
    compressflow.run({"name": "earlier", "stages": {"w": stage}}, cluster=client, out=tmp_path / "a",
                               show_progress=False)
    later_stage = {**stage, "scheduling": {"policy": "bin_packing", "durations_from": str(tmp_path / "a"),
                                           "key_by": "seconds"}}
    tree = compressflow.run({"name": "later", "stages": {"w": later_stage}}, cluster=client, out=tmp_path / "b",
                            show_progress=False)
    expected = assign("bin_packing", known(tmp_path / "a", "w", "seconds"), sorted(client.scheduler_info()["workers"]))
    ledger = tree["tasks"].to_dataset()
    placed = {str(json.loads(p)["seconds"]): str(w) for p, w in zip(ledger.point.values, ledger.worker.values)}
    assert placed == expected
    # worst-fit decreasing puts the 1 s task alone against the five short ones (0.36 s together)
    assert sorted(list(placed.values()).count(w) for w in set(placed.values())) == [1, 5]


def test_work_stealing_with_known_durations_starts_longest_first(client, tmp_path):
    seconds = [0.1, 0.02, 0.6, 0.05, 0.4, 0.15, 0.2]
    stage = {"op": "wait", "sweep": {"seconds": seconds}}
    compressflow.run({"name": "earlier", "stages": {"w": stage}}, cluster=client, out=tmp_path / "a",
                               show_progress=False)
    measured = known(tmp_path / "a", "w", "seconds")  # measured, not nominal
    longest_first = [float(k) for k in sorted(measured, key=lambda k: -measured[k])]
    later = {**stage, "scheduling": {"policy": "work_stealing", "durations_from": str(tmp_path / "a"), "key_by": "seconds"}}
    tree = compressflow.run({"name": "later", "stages": {"w": later}}, cluster=client, out=tmp_path / "b",
                            show_progress=False)
    ledger = tree["tasks"].to_dataset()
    started = [json.loads(p)["seconds"] for p in ledger.point.values[ledger.start.values.argsort()]]
    assert sorted(started[:2]) == sorted(longest_first[:2])  # the two longest start first, one per worker
    assert started[-1] == longest_first[-1]  # and the shortest last (Dask may hand the first few tasks
    # to workers before the whole stage is queued, so the middle order is only roughly by length)
    assert len(set(ledger.worker.values.tolist())) == 2


def test_missing_durations_run_is_an_input_error(client, tmp_path):
    with pytest.raises(InputError, match=r"stages\.w\.scheduling\.durations_from: no finished task records in"):
        compressflow.run(wait_spec("bin_packing", 2, durations_from=str(tmp_path / "nope")), cluster=client,
                         out=tmp_path, show_progress=False)


