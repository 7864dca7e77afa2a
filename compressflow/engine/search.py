"""Running a stage's ``search:`` (:mod:`compressflow.spec.search`): Optuna proposes
configurations by ask-and-tell on the client, each trial runs as Dask tasks, and what the tasks
record is told back.

Strategies:

``grid``, ``random``, ``tpe``, ``nsga2``
    Every point of the space's grid in order (enqueued trials), Optuna's ``RandomSampler``,
    ``TPESampler`` and ``NSGAIISampler``; every trial trains its full budget. Trials are asked in batches of as many as the cluster has
    workers and told in trial order once the whole batch finished, so a search is the same
    for a given ``seed`` however the tasks interleave (and a re-run into the same ``out``
    reuses every finished trial and asks the same next ones).
``successive_halving``
    Synchronous successive halving: every trial trains ``budget.min`` epochs; the best
    1/η are promoted to ``min·η`` epochs, and so on up to ``max``. Deterministic for a seed.
``asha``, ``hyperband``
    Optuna's ``SuccessiveHalvingPruner`` (asynchronous successive halving) and
    ``HyperbandPruner``: a trial is promoted (or pruned) when it reaches a rung, judged
    against the trials that reached that rung before it, without waiting for the rest; as
    many trials run at once as the cluster has workers. Decisions depend on the order in
    which trials finish, so two runs may differ.

A trial at a rung is a task whose ``budget`` stops its training after that epoch of the
*full* schedule (the learning-rate schedule is the ``max``-epoch one) and keeps its
resumable state; its promotion is a task with the next budget that resumes that state, so no
epoch is trained twice. A pruned trial's tasks, and their energy, stay in the ledger. The
per-epoch validation accuracies the tasks publish (``compressflow-progress``) are reported to
Optuna (``trial.report``) as they arrive.

The early-stopping strategies' configurations come from their ``sampler``: Optuna's
``RandomSampler`` (default), ``TPESampler``, or ``grid`` (every point of the space in order,
as enqueued trials: the configurations of a grid search, each stopped early or not)."""

from __future__ import annotations

import itertools
import math
import threading
from dataclasses import dataclass, field
from typing import Any

from compressflow.engine.node import Node
from compressflow.engine.keys import op_code, task_key
from compressflow.ops.signature import stage_signature
from compressflow.rundir.records import LedgerEntry
from compressflow.spec import PipelineSpec
from compressflow.spec.search import LEDGER_OBJECTIVES, MULTI_FIDELITY, SearchSpec, rungs

__all__ = ["Search", "Trial", "searches"]

#: the trial statuses of a search stage's results
TRIAL_STATUSES = ("ok", "pruned", "failed", "cancelled", "running", "pending")


@dataclass
class Trial:
    """One configuration of a search and what became of it."""

    number: int
    params: dict[str, Any]
    point: dict[str, Any]
    status: str = "running"
    rungs: dict[int, float] = field(default_factory=dict)  # budget -> metric at that rung
    nodes: list[Node] = field(default_factory=list)  # its tasks, rung by rung
    values: list[float] | None = None  # the objectives told to Optuna (ok trials)
    energy: dict[str, float] = field(default_factory=dict)  # summed over its tasks
    in_flight: bool = False  # its latest task has not finished
    reported: set[int] = field(default_factory=set)  # the steps told to Optuna's trial.report

    @property
    def latest(self) -> Node | None:
        return self.nodes[-1] if self.nodes else None


class Search:
    """The search of stage ``stage`` at one sweep point (``point``, with upstream ``needs``).

    :meth:`start` returns the first tasks to run; :meth:`finished` takes each task's ledger
    entry and returns the tasks to run next; :attr:`done` once no trial is left to run.
    Thread-safe (progress events arrive on another thread).
    """

    def __init__(self, spec: PipelineSpec, stage: str, point: dict[str, Any], needs: dict[str, Any],
                 parallel: int, index: int = 0) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.spec, self.stage, self.point, self.needs = spec, stage, dict(point), dict(needs)
        st = spec.stages[stage]
        assert st.search is not None
        self.search: SearchSpec = st.search
        self.parallel = max(1, parallel)
        self.seed = self.search.seed + index  # independent searches per sweep point
        self._lock = threading.RLock()
        self.trials: list[Trial] = []
        self._optuna: dict[int, Any] = {}  # trial number -> optuna trial
        self._task_trials: dict[str, list[Trial]] = {}  # task key -> the trials waiting on it (several
        # when a sampler proposes a configuration again: they share the one task)
        self._pending: dict[int, LedgerEntry] = {}  # a batch's finished trials, told in order
        self._stopped = False
        self._rungs: list[int] = rungs(self.search.budget) if self.search.budget is not None else []
        # a fixed name: HyperbandPruner picks each trial's bracket from a hash of it (a random
        # name made Hyperband's brackets, and so its outcome, differ from run to run)
        self.study = optuna.create_study(
            study_name=f"{stage}-{self.seed}-{sorted(self.point.items())}",
            directions=["maximize" if mode == "max" else "minimize" for _, mode in self.search.directions()],
            sampler=self._sampler(), pruner=self._pruner())
        self._n = self.search.n_trials()
        if self.search.proposer() == "grid":
            # every point in order, as enqueued trials: Optuna's GridSampler stops the study once
            # the grid is exhausted, which raises outside study.optimize()
            for values in itertools.product(*(d.grid() or () for d in self.search.space.values())):
                self.study.enqueue_trial(dict(zip(self.search.space, values)))

    # -- Optuna ---------------------------------------------------------------------------------

    def _sampler(self) -> Any:
        import optuna

        proposer = self.search.proposer()
        if proposer == "tpe":
            return optuna.samplers.TPESampler(seed=self.seed, n_startup_trials=min(10, max(2, self._n_startup())))
        if proposer == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=self.seed, population_size=max(2, min(50, 2 * self.parallel)))
        return optuna.samplers.RandomSampler(seed=self.seed)

    def _n_startup(self) -> int:
        return (self.search.trials or 10) // 3

    def _pruner(self) -> Any:
        import optuna

        s, b = self.search, self.search.budget
        if s.strategy == "asha" and b is not None:
            return optuna.pruners.SuccessiveHalvingPruner(min_resource=b.min, reduction_factor=b.reduction_factor,
                                                          min_early_stopping_rate=0)
        if s.strategy == "hyperband" and b is not None:
            return optuna.pruners.HyperbandPruner(min_resource=b.min, max_resource=b.max,
                                                  reduction_factor=b.reduction_factor)
        return optuna.pruners.NopPruner()

    def _ask(self) -> Trial:
        trial = self.study.ask()
        params = {}
        for name, dim in self.search.space.items():
            if dim.choices is not None:
                params[name] = trial.suggest_categorical(name, dim.choices)
            elif dim.integer:
                params[name] = trial.suggest_int(name, int(dim.low), int(dim.high), log=dim.log)  # type: ignore[arg-type]
            else:
                params[name] = trial.suggest_float(name, float(dim.low), float(dim.high), log=dim.log)  # type: ignore[arg-type]
        self._optuna[trial.number] = trial
        t = Trial(len(self.trials), params, {**self.point, "trial": len(self.trials)})
        self.trials.append(t)
        return t

    # -- tasks ------------------------------------------------------------------------------------

    def node(self, trial: Trial, budget: int | None) -> Node:
        """The task of ``trial`` at ``budget`` epochs (``None`` or ``max``: its full training).

        Its key is the op's task key with the strategy (and the budget) added: each strategy
        pays for its own trainings, so a study comparing strategies (or a grid stage beside a
        search) never credits one with another's work; two trials of one strategy that propose
        the same configuration share one task."""
        st = self.spec.stages[self.stage]
        sig = stage_signature(st.op)
        raw = {**st.params, **st.own_params(self.point), **trial.params}
        b = self.search.budget
        if b is not None:
            raw[b.resource] = b.max
        params = sig.validate(raw, where=f"stages.{self.stage}.search")
        data = self.spec.data.options()
        tag = {"__search__": self.search.strategy}
        code = op_code(st.op)
        full = task_key(st.op, {**params, **tag}, data, self.needs, code=code)
        every = self.spec.checkpoint_every_of(self.stage)
        point = dict(trial.point)
        if budget is None or b is None or budget >= b.max:
            node = Node(full, self.stage, st.op, params, point, dict(self.needs), dict(st.resources), every,
                        code=code or "")
        else:
            key = task_key(st.op, {**params, **tag, "__budget__": budget}, data, self.needs, code=code)
            node = Node(key, self.stage, st.op, params, point, dict(self.needs), dict(st.resources), max(1, every),
                        budget=budget, state_key=full, code=code or "")
        trial.nodes.append(node)
        trial.in_flight = True
        self._task_trials.setdefault(node.key, []).append(trial)
        return node

    @property
    def history(self) -> list[Node]:
        """Every task of the search so far (each trial's rungs), for the ledger."""
        with self._lock:
            return [n for t in self.trials for n in t.nodes]

    @property
    def done(self) -> bool:
        with self._lock:
            return all(t.status not in ("running", "pending") for t in self.trials) and (
                self._stopped or len(self.trials) >= self._n)

    def start(self) -> list[Node]:
        """The first tasks: a batch (full-budget strategies), every trial at the first rung
        (successive halving), or one trial per worker (ASHA, Hyperband)."""
        with self._lock:
            strategy = self.search.strategy
            first = self._n if strategy == "successive_halving" else min(self.parallel, self._n)
            budget = self._rungs[0] if strategy in MULTI_FIDELITY else None  # (the spec gave them a budget)
            return [self.node(self._ask(), budget) for _ in range(first)]

    def stop(self) -> None:
        """Ask no more trials (the stage was cancelled); running ones end as their tasks do."""
        with self._lock:
            self._stopped = True

    def report(self, key: str, epoch: int, value: float) -> None:
        """A task's per-epoch validation metric (a progress event) → ``trial.report``."""
        with self._lock:
            if len(self.study.directions) > 1 or not math.isfinite(value):
                return
            for t in self._task_trials.get(key, ()):
                if epoch not in t.reported and t.status == "running":
                    t.reported.add(epoch)
                    self._optuna[t.number].report(value, epoch)

    def finished(self, entry: LedgerEntry, *, energy: dict[str, float]) -> list[Node]:
        """Take a task's ledger entry (``energy``: its kWh, gCO₂ and seconds); return the next tasks."""
        with self._lock:
            waiting = [t for t in self._task_trials.get(entry.key, ()) if t.in_flight and t.nodes[-1].key == entry.key]
            return [n for t in waiting for n in self._trial_finished(t, entry, energy)]

    def _trial_finished(self, t: Trial, entry: LedgerEntry, energy: dict[str, float]) -> list[Node]:
        node = t.nodes[-1]
        t.in_flight = False
        for name, kwh in energy.items():
            t.energy[name] = t.energy.get(name, 0.0) + kwh
        if not entry.ok:
            self._tell_failed(t, "cancelled" if entry.status == "cancelled" else "failed")
            return self._refill()
        value = self._value(entry, t, self.search.directions()[0][0])
        budget = node.budget or (self.search.budget.max if self.search.budget else None)
        if budget is not None:
            t.rungs[budget] = value
        strategy = self.search.strategy
        if strategy in ("asha", "hyperband"):
            return self._asynchronous(t, budget, value)
        if strategy == "successive_halving":
            return self._synchronous()
        self._pending[t.number] = entry
        return self._batch()

    # -- the strategies' next steps --------------------------------------------------------------

    def _value(self, entry: LedgerEntry, t: Trial, name: str) -> float:
        if name in LEDGER_OBJECTIVES:
            return float(t.energy.get(name, math.nan))
        metrics = entry.record.metrics if entry.record is not None else None
        if metrics is None or name not in metrics or metrics[name].ndim:
            return math.nan
        return float(metrics[name])

    def _tell(self, t: Trial, values: list[float]) -> None:
        if any(not math.isfinite(v) for v in values):
            self._tell_failed(t)
            return
        t.values = values
        t.status = "ok"
        self.study.tell(self._optuna[t.number], values if len(values) > 1 else values[0])

    def _tell_failed(self, t: Trial, status: str = "failed") -> None:
        """End ``t`` as ``status`` (failed or cancelled): Optuna records it as a failed trial."""
        import optuna

        t.status = status
        self.study.tell(self._optuna[t.number], state=optuna.trial.TrialState.FAIL)

    def _prune(self, t: Trial) -> None:
        import optuna

        t.status = "pruned"
        self.study.tell(self._optuna[t.number], state=optuna.trial.TrialState.PRUNED)

    def _refill(self) -> list[Node]:
        """New trials for free workers (asynchronous strategies) or the next batch."""
        if self.search.strategy in ("asha", "hyperband"):
            running = sum(t.status == "running" for t in self.trials)
            return [self.node(self._ask(), self._rungs[0]) for _ in range(self._room(running))]
        if self.search.strategy == "successive_halving":
            return self._synchronous()
        return self._batch()

    def _room(self, running: int) -> int:
        if self._stopped:
            return 0
        return max(0, min(self.parallel - running, self._n - len(self.trials)))

    def _asynchronous(self, t: Trial, budget: int | None, value: float) -> list[Node]:
        trial = self._optuna[t.number]
        assert budget is not None
        if budget not in t.reported and math.isfinite(value):
            t.reported.add(budget)
            trial.report(value, budget)
        if budget >= self._rungs[-1]:
            self._tell(t, [value])
        elif not math.isfinite(value) or trial.should_prune():
            self._prune(t)
        elif not self._stopped:
            return [self.node(t, self._next_rung(budget))]
        else:
            self._tell_failed(t, "cancelled")
        return self._refill()

    def _next_rung(self, budget: int) -> int:
        return next(r for r in self._rungs if r > budget)

    def _synchronous(self) -> list[Node]:
        if any(x.in_flight for x in self.trials):
            return []  # the rung is not complete yet
        alive = [x for x in self.trials if x.status == "running"]
        if not alive:
            return []
        rung = max(alive[0].rungs)
        for x in alive:
            if rung not in x.reported and math.isfinite(x.rungs[rung]):
                x.reported.add(rung)
                self._optuna[x.number].report(x.rungs[rung], rung)
        if rung >= self._rungs[-1]:
            for x in alive:
                self._tell(x, [x.rungs[rung]])
            return []
        sign = -1.0 if self.search.mode == "max" else 1.0
        ranked = sorted(alive, key=lambda x: (sign * x.rungs[rung] if math.isfinite(x.rungs[rung]) else math.inf,
                                              x.number))
        keep = max(1, len(alive) // self.search.budget.reduction_factor)  # type: ignore[union-attr]
        for x in ranked[keep:]:
            self._prune(x)
        if self._stopped:
            for x in ranked[:keep]:
                self._tell_failed(x, "cancelled")
            return []
        return [self.node(x, self._next_rung(rung)) for x in sorted(ranked[:keep], key=lambda x: x.number)]

    def _batch(self) -> list[Node]:
        if any(t.in_flight for t in self.trials):
            return []  # the batch is not complete yet
        waiting = [t for t in self.trials if t.status == "running"]
        for t in sorted(waiting, key=lambda t: t.number):
            entry = self._pending.pop(t.number)
            self._tell(t, [self._value(entry, t, name) for name, _ in self.search.directions()])
        room = self._room(0)
        return [self.node(self._ask(), None) for _ in range(room)]

    # -- outcome ------------------------------------------------------------------------------------

    def best(self) -> Trial | None:
        """The best finished trial (single objective), or None."""
        ok = [t for t in self.trials if t.status == "ok" and t.values]
        if not ok or len(self.search.directions()) > 1:
            return None
        sign = 1.0 if self.search.mode == "max" else -1.0
        return max(ok, key=lambda t: (sign * t.values[0], -t.number))  # type: ignore[index]

    def pareto(self) -> list[Trial]:
        """The finished trials no other finished trial dominates (multi-objective)."""
        ok = [t for t in self.trials if t.status == "ok" and t.values]
        signs = [1.0 if mode == "max" else -1.0 for _, mode in self.search.directions()]
        scored = [(t, [s * v for s, v in zip(signs, t.values)]) for t in ok]  # type: ignore[arg-type]
        return [t for t, a in scored
                if not any(all(b_ >= a_ for a_, b_ in zip(a, b)) and any(b_ > a_ for a_, b_ in zip(a, b))
                           for _, b in scored)]


def searches(spec: PipelineSpec, stages: dict[str, list[Node]], parallel: int) -> list[Search]:
    """One :class:`Search` per search stage and sweep point (upstream nodes from ``stages``)."""
    from compressflow.engine.graph import search_points

    out = []
    for name in spec.order():
        if spec.stages[name].search is None:
            continue
        for i, (point, needs) in enumerate(search_points(spec, stages, name)):
            out.append(Search(spec, name, point, needs, parallel, index=i))
    return out
