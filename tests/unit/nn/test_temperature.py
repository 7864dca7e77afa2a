"""Stochastic temperature: integers in range, seeded, roughly uniform; degenerate and fixed
ranges; bad temperatures; the policy factory."""

import pytest

from compressflow.nn.temperature import FixedTemperature, StochasticTemperature, check_temperature, temperature_policy


def draws(seed, n=400, low=2, high=20):
    policy = StochasticTemperature(low, high, seed)
    return [policy() for _ in range(n)]


def test_stochastic_in_range_integers_and_varies():
    taus = draws(0)
    assert all(2 <= t <= 20 and float(t).is_integer() for t in taus)
    assert len(set(taus)) == 19  # 400 draws hit every integer of 2..20
    assert sum(a != b for a, b in zip(taus, taus[1:])) > 300  # changes from batch to batch


def test_same_seed_same_sequence_different_seed_different():
    assert draws(3) == draws(3)
    assert draws(3) != draws(4)


def test_roughly_uniform():
    taus = draws(1, n=19_000)
    counts = [taus.count(v) for v in range(2, 21)]
    assert min(counts) > 800 and max(counts) < 1200  # expected 1000 each


def test_degenerate_range_and_fixed():
    assert set(draws(0, n=20, low=5, high=5)) == {5.0}
    fixed = FixedTemperature(4)
    assert [fixed() for _ in range(3)] == [4.0] * 3 and fixed.draws == []


@pytest.mark.parametrize("bad", [0, -1, {"stochastic": [5, 2]}, {"stochastic": []}, {"stochastic": [0, 3]},
                                 {"stochastic": [2.5, 4]}, {"random": [2, 4]}, "hot", True])
def test_bad_temperatures(bad):
    with pytest.raises(ValueError, match="temperature"):
        check_temperature(bad)


def test_policy_factory():
    assert isinstance(temperature_policy(3, seed=0), FixedTemperature)
    assert isinstance(temperature_policy({"stochastic": [2, 20]}, seed=0), StochasticTemperature)
