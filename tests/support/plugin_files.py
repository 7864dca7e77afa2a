"""Files a user writes, as text: tests write them where the test needs them (a module kept
here would be imported by pytest's doctest collection and register its op in the test process)."""

#: a user's op and model, as a notebook user would write them in a file of their own
USER_OPS = '''
import os
import time

import torch
import xarray as xr
from torch import nn

from compressflow import MODELS, OPS, Record


@MODELS.register
def tiny_mlp(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    hidden = max(1, round(32 * width))
    return nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(in_channels * 16, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


@OPS.register
def fit_probe(ctx, *, model: str = "tiny_mlp", steps: int = 20, seed: int = 0, gate: str = "") -> Record:
    """Fit the user's model with full-batch SGD; wait for the ``gate`` file first, if any."""
    deadline = time.time() + 120
    while gate and not os.path.exists(gate) and time.time() < deadline:
        time.sleep(0.1)
    torch.manual_seed(seed)
    data = ctx.splits()
    net = MODELS.get(model)(num_classes=data.num_classes, in_channels=data.in_channels)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(net(data.train.x), data.train.y).backward()
        opt.step()
    with torch.no_grad():
        accuracy = (net(data.test.x).argmax(1) == data.test.y).float().mean().item()
    return Record(xr.Dataset({
        "accuracy": accuracy,
        "params": sum(p.numel() for p in net.parameters()),
        "shipped": float("compressflow-plugins" in __file__),  # imported from the copy the plugin wrote
    }))
'''
