"""The optimizer/schedule builder: the paper's SGD recipe and AdamW, whose step does not
depend on the gradient's scale (what keeps DML/CMC's 1/τ² gradients trainable)."""

from __future__ import annotations

import pytest
import torch

from compressflow.nn.training import optimizer_with_schedule


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


def test_adamw_step_is_scale_free_sgd_step_is_not():
    sgd_small, sgd_big = _one_step("sgd", 1.0), _one_step("sgd", 100.0)
    torch.testing.assert_close(sgd_big, 100 * sgd_small)
    adam_small, adam_big = _one_step("adamw", 1.0), _one_step("adamw", 100.0)
    torch.testing.assert_close(adam_big, adam_small, rtol=1e-4, atol=1e-7)
    # Adam's first step moves every weight by lr (the rate for batch 128 is 0.128 → 0.128)
    torch.testing.assert_close(adam_small.abs(), torch.full_like(adam_small, 0.128), rtol=1e-3, atol=1e-6)


def test_rate_scales_with_batch_and_unknown_optimizer_names_choices():
    model = torch.nn.Linear(2, 2)
    opt, _ = optimizer_with_schedule(model, lr=0.1, batch_size=32, epochs=1, steps_per_epoch=1, warmup_epochs=0,
                                     optimizer="adamw")
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["lr"] == pytest.approx(0.025)
    with pytest.raises(ValueError, match=r"^optimizer: unknown 'adam'; choose from sgd, adamw$"):
        optimizer_with_schedule(model, lr=0.1, batch_size=32, epochs=1, steps_per_epoch=1, optimizer="adam")
