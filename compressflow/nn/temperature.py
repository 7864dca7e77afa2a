"""Temperature policies for distillation (ALGORITHMS §1): a fixed τ, or STKD's stochastic τ
drawn afresh for every batch, uniformly from the integers of a range, reproducibly from a seed."""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Real
from typing import Any

import numpy as np

__all__ = ["FixedTemperature", "StochasticTemperature", "check_temperature", "temperature_policy", "temperature_vars"]


class FixedTemperature:
    """The same τ for every batch."""

    def __init__(self, tau: float) -> None:
        self.tau = float(tau)
        self.draws: list[float] = []

    def __call__(self) -> float:
        return self.tau

    def state_dict(self) -> dict[str, Any]:
        """Nothing varies (kept so every policy can be checkpointed alike)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


class StochasticTemperature:
    """τ drawn per batch uniformly from the integers ``low..high`` (inclusive).

    The sequence depends only on ``seed`` (its own stream, independent of batch order and
    augmentation); every draw is kept in ``draws`` so a run can show that τ varied.

    Examples
    --------
    >>> policy = StochasticTemperature(2, 20, seed=0)
    >>> taus = [policy() for _ in range(5)]
    >>> all(2 <= t <= 20 for t in taus), len(policy.draws)
    (True, 5)
    """

    def __init__(self, low: int, high: int, seed: int) -> None:
        self.low, self.high = int(low), int(high)
        # a fixed spawn key keeps this stream apart from any other use of the same seed
        self._rng = np.random.default_rng([int(seed), 0x57D])
        self.draws: list[float] = []

    def __call__(self) -> float:
        tau = float(self._rng.integers(self.low, self.high + 1))
        self.draws.append(tau)
        return tau

    def state_dict(self) -> dict[str, Any]:
        """The random stream's position and the draws so far (plain values: a resumable
        training state, :func:`compressflow.nn.training.fit`'s ``stateful``)."""
        return {"bit_generator": self._rng.bit_generator.state, "draws": list(self.draws)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._rng.bit_generator.state = dict(state["bit_generator"])
        self.draws = [float(t) for t in state["draws"]]


def check_temperature(value: Any) -> float | dict[str, list[int]]:
    """Validate a spec's ``temperature``: a number > 0, or ``{stochastic: [low, high]}`` with
    integers ``1 ≤ low ≤ high``. Returns the normalised value; raises ValueError (one line; the
    caller adds the bad value)."""
    if isinstance(value, Real) and not isinstance(value, bool):
        if float(value) > 0:  # numbers.Real declares no comparison operators
            return float(value)
        raise ValueError("temperature must be > 0")
    if isinstance(value, Mapping) and set(value) == {"stochastic"}:
        rng = value["stochastic"]
        if (
            isinstance(rng, (list, tuple)) and len(rng) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in rng)
        ):
            low, high = rng
            if 1 <= low <= high:
                return {"stochastic": [low, high]}
            raise ValueError("the stochastic temperature range is empty, inverted or below 1; use [low, high] with integers 1 <= low <= high")
    raise ValueError("temperature must be a number > 0 or {stochastic: [low, high]} with integers 1 <= low <= high")


def temperature_policy(value: float | Mapping[str, Any], seed: int) -> FixedTemperature | StochasticTemperature:
    """The policy for a validated ``temperature`` value."""
    value = check_temperature(value)
    if isinstance(value, dict):
        low, high = value["stochastic"]
        return StochasticTemperature(low, high, seed)
    return FixedTemperature(value)


def temperature_vars(policy: FixedTemperature | StochasticTemperature) -> dict[str, Any]:
    """What a policy drew, as the distilling ops record it: ``tau_mean`` and ``stochastic``;
    for a stochastic τ also every draw (``tau_draws``, dim ``step``) and their histogram over
    ``low..high`` (``tau_count``, dim ``tau``).

    Examples
    --------
    >>> temperature_vars(FixedTemperature(4.0))
    {'tau_mean': 4.0, 'stochastic': False}
    """
    draws = np.asarray(policy.draws, dtype=float)
    if draws.size == 0 or not isinstance(policy, StochasticTemperature):
        return {"tau_mean": policy.tau if isinstance(policy, FixedTemperature) else float("nan"), "stochastic": False}
    values = np.arange(policy.low, policy.high + 1)
    return {
        "tau_mean": float(draws.mean()),
        "stochastic": True,
        "tau_draws": ("step", draws),
        "tau_count": ("tau", np.array([(draws == v).sum() for v in values], dtype=np.int64)),
        "tau": ("tau", values),
    }
