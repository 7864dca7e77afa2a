"""FLOP and parameter counting, on top of :class:`torch.utils.flop_counter.FlopCounterMode`.

Conventions: a multiply-accumulate (MAC) is two floating-point operations, so
``FLOPs = 2 × MACs``. torchvision's model tables (ResNet18 1.81 G, ...) quote MACs even
where they label them "GFLOPS". PyTorch's counter covers the matrix-multiply and
convolution operators (forward and backward), which dominate CNN cost; element-wise work
(BatchNorm, activations, pooling, the loss) is not counted, as in the published figures.

Models on the ``meta`` device are counted without allocating or computing anything, which
makes ImageNet-sized models cheap to measure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from compressflow.errors import InputError

__all__ = ["count_flops", "effective_macs", "macs_per_sample", "param_count", "train_step_flops_per_sample"]


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Total FLOPs of running ``fn(*args, **kwargs)`` once.

    Parameters
    ----------
    fn : callable
        Any PyTorch code: a model, or a function that also calls ``backward()`` (then its
        backward FLOPs are included too).
    *args, **kwargs
        Passed to ``fn``.

    Returns
    -------
    int
        Floating-point operations (2 per multiply-accumulate).

    Examples
    --------
    >>> count_flops(torch.nn.Linear(3, 4), torch.randn(5, 3))  # 2 * 5 * 3 * 4
    120
    """
    counter = FlopCounterMode(display=False)
    with counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


def _random_batch(model: nn.Module, batch: int, sample_shape: tuple[int, ...]) -> torch.Tensor:
    shape = tuple(sample_shape)
    if not shape or any(not isinstance(s, int) or s < 1 for s in shape):
        raise InputError(
            f"sample_shape must be a tuple of positive ints like (3, 32, 32), got {sample_shape!r}"
        )
    # on the model's device and dtype, so meta-device and half-precision models work too
    ref = next(model.parameters(), None)
    if ref is None:
        return torch.randn(batch, *shape)
    return torch.randn(batch, *shape, device=ref.device, dtype=ref.dtype)


def macs_per_sample(model: nn.Module, sample_shape: tuple[int, ...]) -> int:
    """Forward multiply-accumulates of ``model`` for one input sample.

    The model runs once in eval mode under ``torch.no_grad()`` on a random input of shape
    ``(1, *sample_shape)`` on the model's device; its previous train/eval mode is restored.

    Parameters
    ----------
    model : torch.nn.Module
        The model to measure.
    sample_shape : tuple of int
        Shape of one sample without the batch dimension, e.g. ``(3, 32, 32)``.

    Returns
    -------
    int
        MACs per sample (FLOPs / 2).

    Raises
    ------
    InputError
        If ``sample_shape`` is not a tuple of positive ints.

    Examples
    --------
    >>> macs_per_sample(torch.nn.Conv2d(3, 8, 3, padding=1), (3, 4, 4))  # 8*4*4 outputs × 3*3*3
    3456
    """
    x = _random_batch(model, 1, sample_shape)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return count_flops(model, x) // 2
    finally:
        model.train(was_training)


def train_step_flops_per_sample(
    model: nn.Module, sample_shape: tuple[int, ...], num_classes: int, batch_size: int = 8
) -> int:
    """FLOPs of one training step (forward, cross-entropy, backward) per sample.

    Runs in train mode on a random batch of ``batch_size`` samples and random labels. The
    backward pass costs about twice the forward (gradients for inputs and for weights), so
    expect about ``3 × 2 × macs_per_sample``; the optimizer update is not counted.
    Gradients come from :func:`torch.autograd.grad`, so the ``.grad`` fields, BatchNorm
    running statistics and the train/eval mode are left as they were.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier mapping ``(N, *sample_shape)`` to ``(N, num_classes)`` logits.
    sample_shape : tuple of int
        Shape of one sample without the batch dimension, e.g. ``(3, 32, 32)``.
    num_classes : int
        Number of classes the random labels are drawn from.
    batch_size : int, default 8
        Batch used for the measurement (> 1 so BatchNorm can run in train mode).

    Returns
    -------
    int
        Training FLOPs per sample; multiply by samples seen for a task's training FLOPs.

    Raises
    ------
    InputError
        If the model has no trainable parameters or an argument is out of range.
    """
    if num_classes < 1 or batch_size < 2:
        raise InputError(
            f"need num_classes >= 1 and batch_size >= 2, got num_classes={num_classes!r}, "
            f"batch_size={batch_size!r}"
        )
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise InputError(
            f"{type(model).__name__} has no trainable parameters; "
            "nothing to count a training step for"
        )
    x = _random_batch(model, batch_size, sample_shape)
    y = torch.randint(0, num_classes, (batch_size,), device=x.device)
    # train-mode forward updates BatchNorm statistics: measure without leaving a trace
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    was_training = model.training
    model.train()

    def step() -> None:
        loss = nn.functional.cross_entropy(model(x), y)
        torch.autograd.grad(loss, params)

    try:
        flops = count_flops(step)
    finally:
        model.train(was_training)
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
    return flops // batch_size


def param_count(model: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``model``.

    Examples
    --------
    >>> param_count(torch.nn.Linear(3, 4))
    16
    """
    return sum(p.numel() for p in model.parameters())


def effective_macs(net: nn.Module, shape: tuple[int, ...], density: dict[str, float]) -> float:
    """Forward MACs per sample if every pruned layer skipped its zero weights: each layer's
    MACs × its weight density (unpruned layers count in full)."""
    total: float = macs_per_sample(net, shape)
    for name, d in density.items():
        layer_macs = _layer_macs(net, name, shape)
        total -= layer_macs * (1 - d)
    return float(total)


def _layer_macs(net: nn.Module, name: str, shape: tuple[int, ...]) -> float:
    seen: dict[str, torch.Size] = {}

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        seen["in"] = inputs[0].shape

    h = net.get_submodule(name).register_forward_hook(hook)
    with torch.no_grad():
        net.eval()(torch.zeros(1, *shape))
    h.remove()
    return float(macs_per_sample(net.get_submodule(name), tuple(seen["in"][1:])))
