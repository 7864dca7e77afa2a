"""The optimizer/schedule builder: the paper's SGD recipe, Adam and AdamW, whose step does not
depend on the gradient's scale (what keeps DML/CMC's 1/τ² gradients trainable); a loss that
becomes NaN stops training with a clear message instead of training on garbage."""

from __future__ import annotations

import pytest
import torch

from compressflow.data import load_splits
from compressflow.nn.models import build_model
from compressflow.nn.training import fit, optimizer_with_schedule


def _one_step(optimizer: str, scale: float) -> torch.Tensor:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    before = model.weight.detach().clone()
    opt, sched = optimizer_with_schedule(model, lr=0.128, batch_size=128, epochs=1, steps_per_epoch=10,
                                         warmup_epochs=0, weight_decay=0.0, optimizer=optimizer)
    x = torch.randn(8, 4)
    loss = scale * model(x).pow(2).mean()
    loss.backward()
    opt.step()
    return model.weight.detach() - before


@pytest.mark.parametrize("adam", ["adam", "adamw"])
def test_adam_step_is_scale_free_sgd_step_is_not(adam):
    sgd_small, sgd_big = _one_step("sgd", 1.0), _one_step("sgd", 100.0)
    torch.testing.assert_close(sgd_big, 100 * sgd_small)
    adam_small, adam_big = _one_step(adam, 1.0), _one_step(adam, 100.0)
    torch.testing.assert_close(adam_big, adam_small, rtol=1e-4, atol=1e-7)
    # Adam's first step moves every weight by lr (the rate for batch 128 is 0.128 → 0.128)
    torch.testing.assert_close(adam_small.abs(), torch.full_like(adam_small, 0.128), rtol=1e-3, atol=1e-6)


def test_rate_scales_with_batch_and_unknown_optimizer_names_choices():
    model = torch.nn.Linear(2, 2)
    opt, _ = optimizer_with_schedule(model, lr=0.1, batch_size=32, epochs=1, steps_per_epoch=1, warmup_epochs=0,
                                     optimizer="adamw")
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["lr"] == pytest.approx(0.025)
    with pytest.raises(ValueError, match=r"^optimizer: unknown 'lamb'; choose from sgd, adam, adamw$"):
        optimizer_with_schedule(model, lr=0.1, batch_size=32, epochs=1, steps_per_epoch=1, optimizer="lamb")


def test_adam_couples_weight_decay_adamw_decouples_it():
    """Adam adds ``wd · w`` to the gradient (so with a zero gradient its first step is still a
    full ``lr`` step against the weight's sign); AdamW shrinks the weight by ``lr · wd · w``."""
    steps = {}
    for name in ("adam", "adamw"):
        w = torch.nn.Parameter(torch.tensor([2.0, -3.0]))
        model = torch.nn.Module()
        model.w = w
        opt, _ = optimizer_with_schedule(model, lr=0.128, batch_size=128, epochs=1, steps_per_epoch=1,
                                         warmup_epochs=0, weight_decay=0.1, optimizer=name)
        w.grad = torch.zeros(2)
        opt.step()
        steps[name] = (w.detach() - torch.tensor([2.0, -3.0]))
    torch.testing.assert_close(steps["adam"], torch.tensor([-0.128, 0.128]), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(steps["adamw"], -0.128 * 0.1 * torch.tensor([2.0, -3.0]), rtol=1e-4, atol=1e-6)


def test_schedule_offers_exactly_the_built_optimizers():
    import typing

    from compressflow.nn.training import OPTIMIZERS
    from compressflow.ops.schedule import Schedule

    assert typing.get_args(Schedule.model_fields["optimizer"].annotation) == tuple(OPTIMIZERS)


def test_cpu_layout_is_contiguous_gpu_layout_channels_last():
    from compressflow.nn.training import memory_format

    assert memory_format("cpu") is torch.contiguous_format
    assert memory_format(torch.device("cuda", 0)) is torch.channels_last


def test_nan_loss_stops_training_with_a_clear_message():
    splits = load_splits("digits", image_size=8, channels=1)
    net = build_model("wrn_16_1", num_classes=10, in_channels=1, width=0.5)
    with pytest.raises(FloatingPointError, match=r"^loss became nan at epoch 1; lower lr or check the data$"):
        fit(net, splits, epochs=1, batch_size=256, lr=0.1, seed=0,
            loss_fn=lambda logits, x, y: logits.sum() * float("nan"))
