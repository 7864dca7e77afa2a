"""CIFAR-style image classifiers, registered by name in :data:`compressflow.registries.MODELS`.

Every model is built by a function ``name(*, num_classes=10, in_channels=3, width=1.0)``
and reuses torchvision's architectures and blocks where torchvision has them. The
ImageNet stems are swapped for the CIFAR stem (3×3 stride-1 first convolution, no
max-pool) and every model ends in adaptive average pooling, so one model accepts any
input from 8×8 to 64×64 pixels (and larger). ``width`` multiplies every channel count,
which is how the project makes small students and fast test models.

Registering the names imports no torch: each builder imports its architecture
(:mod:`compressflow.nn.architectures`) when it runs.

Examples
--------
>>> import torch
>>> model = build_model("resnet18", num_classes=10, width=0.25)
>>> model(torch.randn(2, 3, 16, 16)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING

from compressflow.errors import InputError
from compressflow.registries import MODELS

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "build_model",
    "mobilenet_v2",
    "resnet18",
    "resnet34",
    "resnet50",
    "shufflenet_v2",
    "vgg16",
    "wrn_16_1",
    "wrn_40_2",
]

_SHARED_DOC = """
    Parameters
    ----------
    num_classes : int, default 10
        Number of output logits (at least 2).
    in_channels : int, default 3
        Channels of the input images (1 for greyscale, 3 for RGB).
    width : float, default 1.0
        Multiplier applied to every channel count (> 0); 1.0 is the published network.

    Returns
    -------
    torch.nn.Module
        The model, freshly initialised, mapping ``(N, in_channels, H, W)`` to
        ``(N, num_classes)`` logits for any ``H, W >= 8``.

    Raises
    ------
    InputError
        If ``num_classes < 2``, ``in_channels < 1`` or ``width <= 0``.
"""


def _model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Append the shared parameter docs and register ``fn`` under its own name."""
    fn.__doc__ = (fn.__doc__ or "").rstrip() + "\n" + _SHARED_DOC
    return MODELS.register(fn)


@_model
def resnet18(*, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    """ResNet-18 (basic blocks 2-2-2-2) with the CIFAR stem; 11.2 M parameters at width 1."""
    from compressflow.nn.architectures import BasicBlock, resnet

    return resnet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels, width)


@_model
def resnet34(*, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    """ResNet-34 (basic blocks 3-4-6-3) with the CIFAR stem; 21.3 M parameters at width 1."""
    from compressflow.nn.architectures import BasicBlock, resnet

    return resnet(BasicBlock, [3, 4, 6, 3], num_classes, in_channels, width)


@_model
def resnet50(*, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    """ResNet-50 (bottlenecks 3-4-6-3) with the CIFAR stem; 23.5 M parameters at width 1."""
    from compressflow.nn.architectures import Bottleneck, resnet

    return resnet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels, width)


@_model
def mobilenet_v2(*, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    """MobileNetV2 (torchvision, ``width_mult=width``) with the CIFAR stem and strides.

    Channel counts round to multiples of 8 as in torchvision; the last 1×1 convolution
    keeps 1280 channels for ``width < 1`` (the paper's rule). 2.2 M parameters at width 1
    with 10 classes.
    """
    from compressflow.nn import architectures

    return architectures.mobilenet_v2(num_classes, in_channels, width)


@_model
def shufflenet_v2(*, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    """ShuffleNetV2 x1.0 (torchvision) with channels scaled by ``width`` and the CIFAR stem.

    Channel counts round to even numbers because every unit splits its input in half.
    1.3 M parameters at width 1 with 10 classes.
    """
    from compressflow.nn import architectures

    return architectures.shufflenet_v2(num_classes, in_channels, width)


@_model
def vgg16(*, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    """VGG-16 with BatchNorm (torchvision's cfg "D") and the CIFAR single-linear head.

    The five max-pools use ``ceil_mode=True`` so that inputs smaller than 32×32 stop
    shrinking at 1×1 instead of failing. 14.7 M parameters at width 1.
    """
    from compressflow.nn import architectures

    return architectures.vgg16(num_classes, in_channels, width)


@_model
def wrn_40_2(*, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    """Wide ResNet 40-2 (6 blocks per group, widening 2); 2.2 M parameters at width 1."""
    from compressflow.nn.architectures import wide_resnet

    return wide_resnet(40, 2, num_classes, in_channels, width)


@_model
def wrn_16_1(*, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    """Wide ResNet 16-1 (2 blocks per group, widening 1); 0.18 M parameters at width 1."""
    from compressflow.nn.architectures import wide_resnet

    return wide_resnet(16, 1, num_classes, in_channels, width)


def build_model(name: str, **kwargs: object) -> nn.Module:
    """Build the registered model ``name``.

    Parameters
    ----------
    name : str
        A name from ``MODELS.list()``, e.g. ``"resnet18"``.
    **kwargs
        ``num_classes``, ``in_channels`` and ``width``; see :func:`resnet18`.

    Returns
    -------
    torch.nn.Module
        The freshly initialised model.

    Raises
    ------
    compressflow.registries.UnknownNameError
        If ``name`` is not registered (the message lists the valid names).
    InputError
        If an argument is unknown or has a bad value.

    Examples
    --------
    >>> build_model("wrn_16_1", num_classes=100, in_channels=1).fc.out_features
    100
    """
    fn = MODELS.get(name)
    try:
        inspect.signature(fn).bind(**kwargs)
    except TypeError:
        valid = ", ".join(inspect.signature(fn).parameters)
        raise InputError(
            f"model {name!r} got arguments {sorted(kwargs)}; valid arguments: {valid}"
        ) from None
    return fn(**kwargs)
