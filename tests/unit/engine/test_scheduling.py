"""Assignment policies for independent tasks (blockwise distillation's one task per layer)."""

from __future__ import annotations

import itertools

import pytest

from compressflow.engine.scheduling import POLICIES, assign, durations_of, lower_bound, makespan
from compressflow.errors import InputError

EIGHT = {f"t{d}": float(d) for d in (8, 7, 6, 5, 4, 3, 2, 1)}

# Shaped after the blockwise paper's VGG16 per-layer times (first layers ~3.5x the last).
VGG16 = {f"conv{i}": d for i, d in enumerate([1.40, 1.40, 1.10, 1.10, 0.80, 0.80, 0.80, 0.55, 0.55, 0.55,
                                              0.40, 0.40, 0.40])}


def optimum(durations: dict[str, float], n: int) -> float:
    """Exact minimum makespan by brute force (fine for 8 tasks)."""
    values = list(durations.values())
    best = float("inf")
    for combo in itertools.product(range(n), repeat=len(values)):
        loads = [0.0] * n
        for v, w in zip(values, combo):
            loads[w] += v
        best = min(best, max(loads))
    return best


def test_round_robin_is_cyclic():
    a = assign("round_robin", VGG16, ["w0", "w1", "w2", "w3"])
    assert list(a) == list(VGG16)
    assert list(a.values()) == ["w0", "w1", "w2", "w3"] * 3 + ["w0"]


def test_work_stealing_leaves_placement_to_dask():
    assert assign("work_stealing", VGG16, ["w0", "w1"]) is None


@pytest.mark.parametrize("policy", ["round_robin", "bin_packing"])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 20])
def test_every_task_assigned_exactly_once(policy, n):
    workers = [f"w{i}" for i in range(n)]
    a = assign(policy, VGG16, workers)
    assert sorted(a) == sorted(VGG16)
    assert set(a.values()) <= set(workers)
    assert sum(VGG16[k] for k in a) == pytest.approx(sum(VGG16.values()))


def test_bin_packing_two_workers_hits_lower_bound():
    a = assign("bin_packing", EIGHT, ["a", "b"])
    assert lower_bound(EIGHT, 2) == 18.0
    assert makespan(a, EIGHT) == 18.0


def test_bin_packing_three_workers_is_wfd_not_optimal():
    # Worst-fit decreasing by hand: 8|7|6, then 5 -> 6 (11), 4 -> 7 (11), 3 -> 8 (11),
    # 2 -> first of the tied bins (13), 1 -> next lightest (12): loads 13, 12, 11.
    # The optimum is 12 ({8,4}, {7,5}, {6,3,2,1}); WFD is a heuristic, within Graham's
    # 4/3 - 1/(3m) factor of it.
    a = assign("bin_packing", EIGHT, ["a", "b", "c"])
    assert sorted(sum(EIGHT[k] for k, w in a.items() if w == x) for x in "abc") == [11.0, 12.0, 13.0]
    assert makespan(a, EIGHT) == 13.0
    assert optimum(EIGHT, 3) == lower_bound(EIGHT, 3) == 12.0
    assert makespan(a, EIGHT) <= (4 / 3 - 1 / 9) * 12.0


@pytest.mark.parametrize("n", [2, 3, 4])
def test_bin_packing_beats_round_robin_on_vgg16(n):
    workers = [f"w{i}" for i in range(n)]
    bp = makespan(assign("bin_packing", VGG16, workers), VGG16)
    rr = makespan(assign("round_robin", VGG16, workers), VGG16)
    assert bp <= rr
    assert bp <= 1.10 * lower_bound(VGG16, n)


def test_vgg16_four_workers_values():
    workers = ["w0", "w1", "w2", "w3"]
    assert lower_bound(VGG16, 4) == pytest.approx(10.25 / 4)
    # Round robin stacks conv0, 4, 8, 12 on w0.
    assert makespan(assign("round_robin", VGG16, workers), VGG16) == pytest.approx(1.40 + 0.80 + 0.55 + 0.40)
    # WFD by hand: 1.4|1.4|1.1|1.1, 0.8s -> 1.9|1.9|2.2, 0.55s -> 1.95|2.45|2.45, 0.4s -> 2.35, 2.6, 2.75.
    # (The optimum is 2.60, e.g. {1.4,.8,.4} {1.4,.8,.4} {1.1,.8,.55} {1.1,.55,.55,.4}.)
    assert makespan(assign("bin_packing", VGG16, workers), VGG16) == pytest.approx(2.75)


def test_makespan_and_lower_bound():
    assert makespan({"a": "x", "b": "x", "c": "y"}, {"a": 1.0, "b": 2.0, "c": 2.5}) == 3.0
    assert makespan({}, {}) == 0.0
    assert lower_bound({"a": 10.0, "b": 1.0}, 4) == 10.0
    assert lower_bound({"a": 2.0, "b": 2.0}, 1) == 4.0


def test_durations_of_keep_ok_tasks_of_the_stage():
    from compressflow.rundir.records import LedgerEntry

    rows = [
        ("blockwise", {"layer": "features.0", "seed": 0}, 12.5, "ok"),
        ("blockwise", {"layer": "features.3", "seed": 0}, 9.0, "ok"),
        ("blockwise", {"layer": "features.7", "seed": 0}, 99.0, "failed"),
        ("teacher", {"layer": "features.0"}, 300.0, "ok"),
        ("blockwise", {"seed": 1}, 5.0, "ok"),
    ]
    tasks = [LedgerEntry(f"k{i}", stage, "op", point, status=status, start=100.0, end=100.0 + d)
             for i, (stage, point, d, status) in enumerate(rows)]
    assert durations_of(tasks, "blockwise", "layer") == {"features.0": 12.5, "features.3": 9.0}
    with pytest.raises(InputError, match="'nope' is not among the earlier run's tasks"):
        durations_of(tasks, "nope", "layer")


def test_unknown_policy_error_text():
    with pytest.raises(InputError) as err:
        assign("x", VGG16, ["w0"])
    assert str(err.value) == (
        "scheduling.policy: unknown policy 'x'; valid choices: work_stealing, round_robin, bin_packing"
    )
    assert POLICIES == ("work_stealing", "round_robin", "bin_packing")
    with pytest.raises(InputError, match=r"unknown policy 'bin_packng' \(did you mean 'bin_packing'\?\); valid choices"):
        assign("bin_packng", VGG16, ["w0"])


def test_bad_inputs_raise_input_error():
    with pytest.raises(InputError, match="no workers"):
        assign("round_robin", VGG16, [])
    with pytest.raises(InputError, match="negative durations"):
        assign("bin_packing", {"a": -1.0}, ["w0"])
    with pytest.raises(InputError, match="at least 1 worker"):
        lower_bound(VGG16, 0)


def test_assignment_used_by_runner_matches_policy():
    assert assign("round_robin", {"a": 1, "b": 1, "c": 1}, ["w1", "w2"]) == {"a": "w1", "b": "w2", "c": "w1"}
