"""The schedules are defined once (compressflow.ops.schedule); the ops that fine-tune or train
blocks take their defaults from there, under their own spec parameter names."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from compressflow.ops.schedule import BLOCK_TRAINING, FINE_TUNING, BlockTraining, Schedule
from compressflow.ops.signature import stage_signature


def _defaults(op: str) -> dict:
    return {name: f.default for name, f in stage_signature(op).model.model_fields.items()}


def test_fine_tuning_ops_default_to_the_fine_tuning_schedule():
    assert (FINE_TUNING.epochs, FINE_TUNING.lr, FINE_TUNING.warmup_epochs) == (3, 0.01, 0)
    for op in ("assemble", "craft"):
        got = _defaults(op)
        assert {f: got[f] for f in Schedule.model_fields} == FINE_TUNING.model_dump(), op
    assert {f: _defaults("train")[f] for f in Schedule.model_fields} == Schedule().model_dump()


def test_block_training_defaults_are_shared_by_replace_layer_and_craft():
    assert BLOCK_TRAINING == BlockTraining(epochs=10, batch_size=64, lr=1e-3, eval_every=2)
    replace, craft = _defaults("replace_layer"), _defaults("craft")
    assert {f: replace[f] for f in BlockTraining.model_fields} == BLOCK_TRAINING.model_dump()
    assert {f: craft[f"block_{f}" if f != "eval_every" else f] for f in BlockTraining.model_fields} == \
        BLOCK_TRAINING.model_dump()


@pytest.mark.parametrize("op, field", [("replace_layer", "lr"), ("craft", "block_lr")])
def test_a_block_rate_above_one_is_refused(op, field):
    from compressflow.errors import SpecError

    base = {"layer": "conv1"} if op == "replace_layer" else {}
    with pytest.raises(SpecError, match=rf"{field}"):
        stage_signature(op).validate({**base, field: 2.0}, where="stages.s.params")
    with pytest.raises(ValidationError):
        BlockTraining(lr=2.0)


def test_the_fit_loops_keyword_defaults_are_the_schedules():
    """``nn.training.fit`` (a leaf: it cannot import the ops' ``Schedule``) repeats the defaults
    of the schedule fields it takes; they must stay the same values."""
    import inspect

    from compressflow.nn.training import fit

    params = inspect.signature(fit).parameters
    shared = [f for f in Schedule.model_fields if f in params and params[f].default is not inspect.Parameter.empty]
    assert {"momentum", "weight_decay", "warmup_epochs", "milestones", "gamma"} <= set(shared)
    schedule = Schedule().model_dump()
    assert {f: params[f].default for f in shared} == {f: type(params[f].default)(schedule[f]) for f in shared}
