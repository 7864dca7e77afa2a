"""Searches (compressflow.engine.search): the driver is checked here without Dask, its tasks
"run" by computing the objective op's known accuracy for their budget, and the spec's
``search:`` block against a table of bad input. End-to-end runs on a cluster are in
tests/e2e/test_search_runs.py."""

from __future__ import annotations

import math

import pytest
import xarray as xr

from compressflow.engine.search import Search
from compressflow.errors import SpecError
from compressflow.ops.objective import known_accuracy
from compressflow.rundir.records import LedgerEntry, Record
from compressflow.spec import load_spec

SPACE = {"x": {"low": 0.0, "high": 1.0}, "shape": {"choices": ["a", "b", "c"]}}

BUDGET = {"resource": "epochs", "min": 1, "max": 9, "reduction_factor": 3}


def search_spec(**search):
    block = {"space": SPACE, "seed": 0, **search}
    return load_spec({"name": "s", "data": {"dataset": "digits", "image_size": 8, "channels": 1},
                      "stages": {"s": {"op": "objective", "search": block}}})


def simulate(spec, parallel=2, order=None, cost_of=None):
    """Run the search to the end: every task 'trains' to its budget at once and records the
    known accuracy; ``order`` picks which in-flight task finishes next (default: first in)."""
    search = Search(spec, "s", {}, {}, parallel)
    flight = list(search.start())
    tasks = []
    while flight:
        node = flight.pop(order(flight) if order else 0)
        epochs = node.budget or node.params["epochs"]
        x, shape = node.params["x"], node.params["shape"]
        metrics = xr.Dataset({"val_accuracy": known_accuracy(x, shape, epochs), "cost": x})
        entry = LedgerEntry(node.key, "s", "objective", node.point, status="ok", start=0.0, end=1.0,
                            energy={"energy_kwh": 1e-3 * epochs}, record=Record(metrics))
        tasks.append((node, epochs))
        flight += search.finished(entry, energy={"energy_kwh": 1e-3 * epochs, "co2_g": epochs, "duration_s": 1.0})
    assert search.done
    return search, tasks


def test_grid_runs_every_point_once_and_picks_the_known_optimum():
    grid = {"x": {"choices": [0.1, 0.4, 0.7, 1.0]}, "shape": {"choices": ["a", "b", "c"]}}
    search, tasks = simulate(search_spec(strategy="grid", space=grid))
    seen = [(t.params["x"], t.params["shape"]) for t in search.trials]
    assert sorted(seen) == sorted((x, s) for x in (0.1, 0.4, 0.7, 1.0) for s in "abc") and len(tasks) == 12
    assert search.best().params == {"x": 0.7, "shape": "b"}
    assert search.best().values[0] == pytest.approx(known_accuracy(0.7, "b", 8))  # the op's default 8 epochs


@pytest.mark.parametrize("strategy", ["random", "tpe"])
def test_sampling_strategies_are_deterministic_for_a_seed_and_find_the_region(strategy):
    spec = search_spec(strategy=strategy, trials=30, seed=3)
    a, _ = simulate(spec)
    b, _ = simulate(spec, order=lambda flight: len(flight) - 1)  # tasks finish in another order
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    best = a.best()
    assert best.params["shape"] == "b" and abs(best.params["x"] - 0.7) < 0.2, best.params
    assert best.values[0] == max(t.values[0] for t in a.trials if t.values)


def test_tpe_beats_random_search_on_the_same_budget():
    """The point of a model-based sampler: over 5 seeds, TPE's best of 30 is at least random's."""
    gaps = []
    for seed in range(5):
        tpe, _ = simulate(search_spec(strategy="tpe", trials=30, seed=seed))
        rnd, _ = simulate(search_spec(strategy="random", trials=30, seed=seed))
        gaps.append(tpe.best().values[0] - rnd.best().values[0])
    assert sum(gaps) / len(gaps) > 0, gaps


def test_successive_halving_promotes_the_top_third_and_never_repeats_an_epoch():
    search, tasks = simulate(search_spec(strategy="successive_halving", trials=9, budget=BUDGET))
    by_rung = {r: sorted(((t.rungs[r], t.number) for t in search.trials if r in t.rungs), reverse=True)
               for r in (1, 3, 9)}
    assert [len(by_rung[r]) for r in (1, 3, 9)] == [9, 3, 1]
    assert {n for _, n in by_rung[3]} == {n for _, n in by_rung[1][:3]}  # the best 3 of rung 1 went on
    assert {n for _, n in by_rung[9]} == {by_rung[3][0][1]}
    assert sorted(t.status for t in search.trials) == ["ok"] + ["pruned"] * 8
    for t in search.trials:  # each promotion resumes the trial's own state: no epoch is trained twice
        assert [n.budget for n in t.nodes] == [1, 3, None][:len(t.nodes)]
        assert {n.state_key for n in t.nodes[:-1]} <= {t.nodes[-1].state_key or t.nodes[-1].key}
    winner = next(t for t in search.trials if t.status == "ok")
    assert winner.nodes[-1].state_key == "" and all(n.state_key == winner.nodes[-1].key for n in winner.nodes[:-1])
    assert winner.energy["energy_kwh"] == pytest.approx(1e-3 * (1 + 3 + 9))  # its three tasks' energy


@pytest.mark.parametrize("strategy", ["successive_halving", "asha", "hyperband"])
def test_early_stopping_over_a_grid_tries_every_point_once(strategy):
    """``sampler: grid``: the trials are exactly a grid search's configurations (the comparison
    STKD's premise needs), in order, each stopped early or not; the known optimum wins."""
    grid = {"x": {"choices": [0.1, 0.4, 0.7, 1.0]}, "shape": {"choices": ["a", "b", "c"]}}
    spec = search_spec(strategy=strategy, space=grid, sampler="grid", budget=BUDGET)
    assert spec.stages["s"].search.n_trials() == 12  # trials default to the grid's size
    search, tasks = simulate(spec)
    points = [(x, sh) for x in (0.1, 0.4, 0.7, 1.0) for sh in "abc"]
    assert [(t.params["x"], t.params["shape"]) for t in search.trials] == points
    assert "pruned" in {t.status for t in search.trials}
    assert search.best().params == {"x": 0.7, "shape": "b"}
    assert sum(max(t.rungs) for t in search.trials) < 12 * 9  # cheaper than the full grid


def test_asha_with_a_tpe_sampler_learns_from_finished_trials():
    """ASHA asks trials as others finish, so TPE has observations to model: its proposals
    part from random search's after the startup draws, and move toward the optimum."""
    def trials(sampler, seed):
        spec = search_spec(strategy="asha", trials=30, budget=BUDGET, sampler=sampler, seed=seed)
        return simulate(spec)[0].trials

    tpe, rnd = trials("tpe", 1), trials("random", 1)
    assert [t.params for t in tpe] != [t.params for t in rnd]
    late = [t.params for t in tpe[-10:]]
    assert sum(p["shape"] == "b" for p in late) > sum(p["shape"] == "b" for p in (t.params for t in rnd[-10:]))


@pytest.mark.parametrize("strategy", ["asha", "hyperband"])
def test_asynchronous_strategies_prune_early_and_spend_less_than_the_full_budget(strategy):
    search, tasks = simulate(search_spec(strategy=strategy, trials=12, budget=BUDGET))
    statuses = [t.status for t in search.trials]
    assert "pruned" in statuses and "ok" in statuses and len(search.trials) == 12
    epochs = sum(max(t.rungs) for t in search.trials)  # a promotion resumes: a trial trains up to its last rung
    assert epochs < 12 * 9, epochs  # less than every trial trained in full
    for t in search.trials:
        if t.status == "pruned":
            assert max(t.rungs) < 9 and t.energy["energy_kwh"] > 0  # stopped early, its energy counted
    best = search.best()
    assert best.values[0] == max(t.values[0] for t in search.trials if t.values)


def test_multi_objective_returns_exactly_the_non_dominated_set():
    search, _ = simulate(search_spec(strategy="nsga2", trials=16, objectives=["val_accuracy:max", "cost:min"]))
    done = [t for t in search.trials if t.status == "ok"]
    assert len(done) == 16

    def dominates(a, b):  # a better or equal in both, strictly better in one (accuracy up, cost down)
        (acc_a, cost_a), (acc_b, cost_b) = a.values, b.values
        return acc_a >= acc_b and cost_a <= cost_b and (acc_a > acc_b or cost_a < cost_b)

    expected = {t.number for t in done if not any(dominates(o, t) for o in done)}
    assert {t.number for t in search.pareto()} == expected and expected
    assert search.best() is None  # several objectives have no single best


def test_a_stopped_search_asks_no_more_trials():
    spec = search_spec(strategy="random", trials=10)
    search = Search(spec, "s", {}, {}, 2)
    first = search.start()
    search.stop()
    more = []
    for node in first:
        entry = LedgerEntry(node.key, "s", "objective", node.point, status="ok", start=0.0, end=1.0,
                            record=Record(xr.Dataset({"val_accuracy": 0.5})))
        more += search.finished(entry, energy={"energy_kwh": 0.0})
    assert more == [] and search.done and len(search.trials) == 2


def test_a_failed_trial_is_told_and_replaced():
    spec = search_spec(strategy="random", trials=3)
    search = Search(spec, "s", {}, {}, 1)
    (node,) = search.start()
    failed = LedgerEntry(node.key, "s", "objective", node.point, status="failed", error="boom")
    (nxt,) = search.finished(failed, energy={"energy_kwh": 1e-6})
    assert search.trials[0].status == "failed" and nxt.point == {"trial": 1}
    assert search.trials[0].energy["energy_kwh"] == 1e-6  # a failed trial's energy is kept


def test_a_searched_parameter_cannot_also_be_set_or_swept_and_a_search_cannot_feed_a_stage():
    base = {"op": "objective", "search": {"strategy": "random", "space": SPACE, "trials": 2}}
    with pytest.raises(SpecError, match=r"stages\.s\.search\.space\.x: 'x' is also in params; keep one"):
        load_spec({"name": "s", "stages": {"s": {**base, "params": {"x": 0.5}}}})
    with pytest.raises(SpecError, match=r"stages\.s\.search\.space\.x: 'x' is also in sweep"):
        load_spec({"name": "s", "stages": {"s": {**base, "sweep": {"x": [0.5]}}}})
    with pytest.raises(SpecError, match=r"stages\.s\.search\.budget\.resource: 'epochs' is set by the budget"):
        load_spec({"name": "s", "stages": {"s": {**base, "params": {"epochs": 3}, "search": {
            **base["search"], "strategy": "asha", "budget": BUDGET}}}})
    with pytest.raises(SpecError, match=r"stages\.t\.needs: stage 's' is a search; no stage can take its output"):
        load_spec({"name": "s", "stages": {"s": {"op": "train", "search": {"strategy": "random", "space": {
            "lr": {"low": 0.01, "high": 0.1}}, "trials": 2}}, "t": {"op": "evaluate", "needs": {"model": "s"}}}})


def test_a_search_counts_toward_the_task_limit():
    from compressflow.spec import task_counts

    spec = search_spec(strategy="asha", trials=100, budget=BUDGET)
    assert task_counts(spec) == {"s": 100 * 3}  # every trial through every rung, at most
    assert math.isfinite(spec.stages["s"].search.n_trials())
