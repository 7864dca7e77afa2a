"""Resumable training (fit's ``checkpoint``/``resume``): a run stopped after epoch k and resumed
from its saved state ends bit-identical to one that never stopped — weights, curves, the
random streams of batch order, augmentation, dropout and a loss's own draws."""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch

from compressflow.data import load_splits
from compressflow.nn.temperature import StochasticTemperature
from compressflow.nn.training import ResumeMismatch, fit

# augmentation on (every op), so the batch generator's stream matters
SPLITS = load_splits("digits", image_size=8, channels=1, augment=("crop", "flip", "rotate"))

RUN = dict(epochs=4, batch_size=128, lr=0.05, seed=7, warmup_epochs=0.5)


def _net() -> torch.nn.Module:
    """Small, with dropout (torch's global RNG) and batch norm (running statistics)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Dropout(0.3), torch.nn.Linear(8 * 64, 10))


class Meter:
    """A rising energy reading (kWh): +1 mWh per read."""

    def __init__(self) -> None:
        self.kwh = 0.0

    def __call__(self) -> float:
        self.kwh += 1e-3
        return self.kwh


class Stop(Exception):
    pass


def _serialised(states: list[bytes]):
    def save(state: dict[str, Any]) -> None:  # the state's tensors are live: serialise at once
        buf = io.BytesIO()
        torch.save(state, buf)
        states.append(buf.getvalue())
    return save


def _load(blob: bytes) -> dict[str, Any]:
    return torch.load(io.BytesIO(blob), weights_only=True)


def _interrupted(k: int, every: int = 1, **extra) -> list[bytes]:
    """Train until the hook stops the run after epoch ``k``; the states it saved."""
    states: list[bytes] = []

    def stop(epoch, hist):
        if epoch == k:
            raise Stop

    with pytest.raises(Stop):
        fit(_net(), SPLITS, **RUN, energy=Meter(), checkpoint=_serialised(states), checkpoint_every=every,
            on_epoch=stop, **extra)
    return states


def _equal_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_run_resumed_after_epoch_2_ends_as_one_that_never_stopped():
    whole = _net()
    expected = fit(whole, SPLITS, **RUN, energy=Meter())
    states = _interrupted(2)
    assert [_load(s)["epoch"] for s in states] == [1, 2]  # every epoch, and the one the hook stopped at
    state = _load(states[-1])
    resumed_net = _net()
    seen = []
    meter = Meter()
    got = fit(resumed_net, SPLITS, **RUN, energy=meter, resume=state, on_epoch=lambda e, h: seen.append(e))
    assert seen == [3, 4]  # epochs 1-2 are not trained again
    assert _equal_weights(whole, resumed_net)
    assert got.train_loss == expected.train_loss and got.train_accuracy == expected.train_accuracy
    assert got.val_accuracy == expected.val_accuracy and got.lr == expected.lr
    assert got.train_samples == expected.train_samples and got.eval_samples == expected.eval_samples
    # energy and time continue from the saved values: saved energy + this attempt's reading
    assert got.energy_kwh == pytest.approx([1e-3, 2e-3, 2e-3 + 1e-3, 2e-3 + 2e-3])
    assert got.energy_kwh == sorted(got.energy_kwh) and got.elapsed_s == sorted(got.elapsed_s)
    assert got.elapsed_s[:2] == state["history"]["elapsed_s"] and got.elapsed_s[2] > got.elapsed_s[1]
    assert not resumed_net.training


def test_checkpoint_every_2_saves_at_2_4_and_before_the_stop():
    states = _interrupted(3, every=2)
    assert [_load(s)["epoch"] for s in states] == [2, 3]  # epoch 3: the stop's own save
    whole_states: list[bytes] = []
    fit(_net(), SPLITS, **{**RUN, "epochs": 5}, checkpoint=_serialised(whole_states), checkpoint_every=2)
    assert [_load(s)["epoch"] for s in whole_states] == [2, 4, 5]  # and always after the last epoch


def test_a_finished_state_restores_the_model_and_trains_nothing():
    states: list[bytes] = []
    trained = _net()
    hist = fit(trained, SPLITS, **RUN, checkpoint=_serialised(states), checkpoint_every=1)
    final = _load(states[-1])
    assert final["epoch"] == RUN["epochs"]
    fresh, calls = _net(), []
    again = fit(fresh, SPLITS, **RUN, resume=final, on_epoch=lambda e, h: calls.append(e))
    assert calls == [] and _equal_weights(trained, fresh)
    assert again.val_accuracy == hist.val_accuracy and again.train_time_s == hist.train_time_s


def test_a_loss_with_its_own_random_stream_resumes_it():
    """A stochastic temperature's draws continue where they stopped (``stateful``)."""

    def run(policy, **kw):
        def loss(logits, x, y):
            return torch.nn.functional.cross_entropy(logits / policy(), y)
        return fit(_net(), SPLITS, **RUN, loss_fn=loss, stateful=(policy,), **kw)

    whole = StochasticTemperature(2, 20, seed=1)
    expected = run(whole)
    first = StochasticTemperature(2, 20, seed=1)
    states: list[bytes] = []

    def stop(epoch, hist):
        if epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        run(first, checkpoint=_serialised(states), checkpoint_every=1, on_epoch=stop)
    second = StochasticTemperature(2, 20, seed=1)
    got = run(second, resume=_load(states[-1]))
    assert second.draws == whole.draws and len(set(whole.draws)) > 1
    assert got.train_loss == expected.train_loss


@pytest.mark.parametrize("change, message", [
    ({"epochs": 5}, r"saved with epochs=4, this run has epochs=5"),
    ({"batch_size": 64}, r"saved with batch_size=128, this run has batch_size=64"),
    ({"seed": 8}, r"saved with seed=7, this run has seed=8"),
])
def test_a_state_of_another_schedule_is_refused_before_anything_changes(change, message):
    state = _load(_interrupted(1)[-1])
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ResumeMismatch, match=message):
        fit(net, SPLITS, **{**RUN, **change}, resume=state)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_a_state_of_another_model_is_refused():
    state = _load(_interrupted(1)[-1])
    torch.manual_seed(0)
    other = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with pytest.raises(ResumeMismatch, match=r"^its model has other parameters"):
        fit(other, SPLITS, **RUN, resume=state)
    with pytest.raises(ResumeMismatch, match=r"^not a resumable state of format 1$"):
        fit(_net(), SPLITS, **RUN, resume={"epoch": 1})
