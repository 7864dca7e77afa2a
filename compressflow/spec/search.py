"""The ``search:`` block of a stage: which configurations of the op's parameters to try and how
(:mod:`compressflow.engine.search` runs it). Validated with the rest of the spec, before any task
runs; every problem is one :class:`~compressflow.errors.SpecError` line naming the field.

.. code-block:: yaml

    search:
      strategy: asha                 # grid | random | tpe | successive_halving | asha | hyperband | nsga2
      space:
        temperature: {low: 2, high: 20}            # integers (both ends whole numbers)
        lr: {low: 0.01, high: 0.3, log: true}     # floats, log-uniform
        loss: {choices: [hkd, dml]}
      metric: val_accuracy           # never a test metric
      mode: max
      budget: {resource: epochs, min: 2, max: 30, reduction_factor: 3}
      trials: 12
      seed: 0

The early-stopping strategies (successive_halving, asha, hyperband) take ``sampler: random``
(the default), ``tpe`` or ``grid`` — which configurations their trials are; ``grid`` makes every
point of the space one trial, in order (``trials`` then defaults to the grid's size), so an
early-stopping search covers exactly a grid search's configurations.

Multi-objective searches give ``objectives: [val_accuracy:max, co2_g:min]`` instead of
``metric``/``mode`` (strategies grid, random, tpe, nsga2)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from compressflow.ops.signature import Seed, shown


__all__ = ["BudgetSpec", "DimensionSpec", "LEDGER_OBJECTIVES", "MULTI_FIDELITY", "MAX_TRIALS", "SearchSpec",
           "STRATEGIES", "first_configuration", "rungs"]

STRATEGIES = ("grid", "random", "tpe", "successive_halving", "asha", "hyperband", "nsga2")
#: strategies that stop poor trials early at budget rungs (they need ``budget``)
MULTI_FIDELITY = ("successive_halving", "asha", "hyperband")
#: objectives read from a trial's energy ledger rather than its record's metrics
LEDGER_OBJECTIVES = ("energy_kwh", "co2_g", "duration_s")
#: the most trials one search may run (each is at least one task)
MAX_TRIALS = 1000

_STRICT = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
_TEST_METRIC = "a test-split metric; a search picks on the validation split (e.g. val_accuracy), never the test split"


class DimensionSpec(BaseModel):
    """One searched parameter: ``choices``, or a range ``low``..``high`` (integers when both
    ends are whole numbers, else floats; ``log`` samples log-uniformly)."""

    model_config = _STRICT
    choices: list[Any] | None = Field(default=None, min_length=1, max_length=1000)
    low: int | float | None = None
    high: int | float | None = None
    log: bool = False

    @model_validator(mode="after")
    def _one_kind(self) -> DimensionSpec:
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.log:
                raise ValueError("give either choices or low/high (with log), not both")
            for c in self.choices:
                if not (c is None or isinstance(c, (bool, int, float, str))):
                    raise ValueError(f"choice {shown(c)} is not a number, string, boolean or null")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give choices: [...] or both low and high")
        if not self.low < self.high:
            raise ValueError(f"low {self.low!r} must be below high {self.high!r}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0 (got {self.low!r})")
        return self

    @property
    def integer(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int) and self.choices is None

    def grid(self) -> list[Any] | None:
        """Every value, for the grid strategy (None for a float range: it has no grid)."""
        if self.choices is not None:
            return list(self.choices)
        if self.integer:
            assert isinstance(self.low, int) and isinstance(self.high, int)
            return list(range(self.low, self.high + 1))
        return None


class BudgetSpec(BaseModel):
    """The resource a multi-fidelity search hands out: a trial trains ``min`` epochs first
    and, if it ranks well, is promoted to ``min·η``, ``min·η²``, … up to ``max``
    (η = ``reduction_factor``), resuming from its checkpoint each time."""

    model_config = _STRICT
    resource: str = "epochs"
    min: int = Field(ge=1)
    max: int = Field(ge=1, le=100_000)
    reduction_factor: int = Field(default=3, ge=2, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> BudgetSpec:
        if self.min > self.max:
            raise ValueError(f"min {self.min} must not exceed max {self.max}")
        return self


class SearchSpec(BaseModel):
    """A stage's search (module docstring)."""

    model_config = _STRICT
    strategy: Literal["grid", "random", "tpe", "successive_halving", "asha", "hyperband", "nsga2"]
    space: dict[str, DimensionSpec] = Field(min_length=1)
    metric: str = "val_accuracy"
    mode: Literal["max", "min"] = "max"
    objectives: list[str] | None = Field(default=None, min_length=2, max_length=4)
    budget: BudgetSpec | None = None
    trials: int | None = Field(default=None, ge=1, le=MAX_TRIALS)
    sampler: Literal["random", "tpe", "grid"] | None = None
    seed: Seed = 0

    @field_validator("metric")
    @classmethod
    def _validation_metric(cls, v: str) -> str:
        if _is_test_metric(v):
            raise ValueError(f"{v!r} is {_TEST_METRIC}")
        return v

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v: list[str] | None) -> list[str] | None:
        for item in v or ():
            name, _, mode = item.rpartition(":")
            if not name or mode not in ("max", "min"):
                raise ValueError(f"objective {item!r} must be 'name:max' or 'name:min' (e.g. val_accuracy:max)")
            if _is_test_metric(name):
                raise ValueError(f"objective {name!r} is {_TEST_METRIC}")
        if v is not None and len({o.rpartition(':')[0] for o in v}) != len(v):
            raise ValueError(f"objectives {v!r} name a metric twice")
        return v

    def directions(self) -> list[tuple[str, str]]:
        """``[(metric, "max" | "min"), ...]``: the objectives, or the one metric."""
        if self.objectives is None:
            return [(self.metric, self.mode)]
        return [tuple(o.rsplit(":", 1)) for o in self.objectives]  # type: ignore[misc]

    def proposer(self) -> str:
        """What proposes the configurations: ``grid``, ``random``, ``tpe`` or ``nsga2`` (the
        strategy itself, or an early-stopping strategy's ``sampler``, random by default)."""
        if self.strategy in MULTI_FIDELITY:
            return self.sampler or "random"
        return self.strategy

    def n_trials(self) -> int:
        """Trials to run: ``trials``, or for a grid the size of the grid."""
        if self.trials is not None:
            return self.trials
        return math.prod(len(d.grid() or ()) for d in self.space.values())


def rungs(budget: BudgetSpec) -> list[int]:
    """The budgets a trial may be promoted through: ``min·η^k`` below ``max``, then ``max``.

    >>> rungs(BudgetSpec(min=2, max=30, reduction_factor=3))
    [2, 6, 18, 30]
    """
    out, r = [], budget.min
    while r < budget.max:
        out.append(r)
        r *= budget.reduction_factor
    return [*out, budget.max]


def _is_test_metric(name: str) -> bool:
    return name in ("accuracy", "test_accuracy") or name.startswith("test_")


def first_configuration(search: SearchSpec | None) -> dict[str, Any]:
    """One configuration of ``search`` (the first choice or low end of every dimension, the
    full budget): what the spec check validates a stage's parameters with."""
    if search is None:
        return {}
    first = {p: (d.choices[0] if d.choices is not None else d.low) for p, d in search.space.items()}
    if search.budget is not None:
        first[search.budget.resource] = search.budget.max
    return first
