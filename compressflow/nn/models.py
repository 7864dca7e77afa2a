"""CIFAR-style image classifiers, registered by name in :data:`compressflow.registries.MODELS`.

Every model is built by a function ``name(*, num_classes=10, in_channels=3, width=1.0)``
and reuses torchvision's architectures and blocks where torchvision has them. The
ImageNet stems are swapped for the CIFAR stem (3×3 stride-1 first convolution, no
max-pool) and every model ends in adaptive average pooling, so one model accepts any
input from 8×8 to 64×64 pixels (and larger). ``width`` multiplies every channel count,
which is how the project makes small students and fast test models.

Examples
--------
>>> import torch
>>> model = build_model("resnet18", num_classes=10, width=0.25)
>>> model(torch.randn(2, 3, 16, 16)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

import inspect
import math
import re
from collections import OrderedDict
from collections.abc import Callable

import torch
import torchvision
from torch import nn
from torchvision.models.mobilenetv2 import _make_divisible
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops.misc import Conv2dNormActivation

from compressflow.errors import InputError
from compressflow.registries import MODELS

__all__ = [
    "build_model",
    "mobilenet_v2",
    "resnet18",
    "resnet34",
    "resnet50",
    "shufflenet_v2",
    "stage_outputs",
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


def _check(num_classes: int, in_channels: int, width: float) -> None:
    # bool is an int subclass; `width=True` is a typo, not a multiplier
    def is_int(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not is_int(num_classes) or num_classes < 2:
        raise InputError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if not is_int(in_channels) or in_channels < 1:
        raise InputError(f"in_channels must be an integer >= 1, got {in_channels!r}")
    if (
        not isinstance(width, (int, float))
        or isinstance(width, bool)
        or not math.isfinite(width)
        or width <= 0
    ):
        raise InputError(f"width must be a finite number > 0 (e.g. 0.25, 1.0), got {width!r}")


def _scale(channels: int, width: float, multiple: int = 1) -> int:
    """``channels * width`` rounded to a positive multiple of ``multiple``."""
    return max(multiple, round(channels * width / multiple) * multiple)


def _init_weights(model: nn.Module) -> nn.Module:
    # torchvision's ResNet/VGG scheme; the default uniform init trains deep BN nets slower
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def _head(in_features: int, num_classes: int, name: str = "fc") -> list[tuple[str, nn.Module]]:
    return [
        ("avgpool", nn.AdaptiveAvgPool2d(1)),
        ("flatten", nn.Flatten(1)),
        (name, nn.Linear(in_features, num_classes)),
    ]


# --------------------------------------------------------------------------- ResNet


def _resnet(
    block: type[BasicBlock | Bottleneck],
    layers: list[int],
    num_classes: int,
    in_channels: int,
    width: float,
) -> nn.Module:
    """He et al.'s ResNet with the CIFAR stem, on torchvision's residual blocks."""
    _check(num_classes, in_channels, width)
    planes = [_scale(c, width) for c in (64, 128, 256, 512)]
    inplanes = planes[0]
    parts: list[tuple[str, nn.Module]] = [
        ("conv1", nn.Conv2d(in_channels, inplanes, 3, stride=1, padding=1, bias=False)),
        ("bn1", nn.BatchNorm2d(inplanes)),
        ("relu", nn.ReLU(inplace=True)),
    ]
    for i, (p, n) in enumerate(zip(planes, layers)):
        stride = 1 if i == 0 else 2
        out = p * block.expansion
        downsample = None
        if stride != 1 or inplanes != out:
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )
        blocks = [block(inplanes, p, stride, downsample)]
        blocks += [block(out, p) for _ in range(n - 1)]
        parts.append((f"layer{i + 1}", nn.Sequential(*blocks)))
        inplanes = out
    return _init_weights(nn.Sequential(OrderedDict(parts + _head(inplanes, num_classes))))


@_model
def resnet18(*, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    """ResNet-18 (basic blocks 2-2-2-2) with the CIFAR stem; 11.2 M parameters at width 1."""
    return _resnet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels, width)


@_model
def resnet34(*, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    """ResNet-34 (basic blocks 3-4-6-3) with the CIFAR stem; 21.3 M parameters at width 1."""
    return _resnet(BasicBlock, [3, 4, 6, 3], num_classes, in_channels, width)


@_model
def resnet50(*, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    """ResNet-50 (bottlenecks 3-4-6-3) with the CIFAR stem; 23.5 M parameters at width 1."""
    return _resnet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels, width)


# --------------------------------------------------------------------- MobileNetV2

# torchvision's (t, c, n, s) table with the second stage at stride 1: the usual CIFAR
# variant, which keeps three downsamplings so 32×32 inputs end at 4×4, not 1×1
_MOBILENET_V2_CIFAR = [
    [1, 16, 1, 1],
    [6, 24, 2, 1],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
]


@_model
def mobilenet_v2(*, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    """MobileNetV2 (torchvision, ``width_mult=width``) with the CIFAR stem and strides.

    Channel counts round to multiples of 8 as in torchvision; the last 1×1 convolution
    keeps 1280 channels for ``width < 1`` (the paper's rule). 2.2 M parameters at width 1
    with 10 classes.
    """
    _check(num_classes, in_channels, width)
    model = torchvision.models.MobileNetV2(
        num_classes=num_classes,
        width_mult=float(width),
        inverted_residual_setting=_MOBILENET_V2_CIFAR,
    )
    stem_out = _make_divisible(32 * width, 8)
    model.features[0] = _init_weights(
        Conv2dNormActivation(in_channels, stem_out, stride=1, activation_layer=nn.ReLU6)
    )
    return model


# -------------------------------------------------------------------- ShuffleNetV2


@_model
def shufflenet_v2(*, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    """ShuffleNetV2 x1.0 (torchvision) with channels scaled by ``width`` and the CIFAR stem.

    Channel counts round to even numbers because every unit splits its input in half.
    1.3 M parameters at width 1 with 10 classes.
    """
    _check(num_classes, in_channels, width)
    channels = [_scale(c, width, multiple=2) for c in (24, 116, 232, 464, 1024)]
    model = torchvision.models.ShuffleNetV2(
        stages_repeats=[4, 8, 4], stages_out_channels=channels, num_classes=num_classes
    )
    model.conv1 = _init_weights(
        nn.Sequential(
            nn.Conv2d(in_channels, channels[0], 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(channels[0]),
            nn.ReLU(inplace=True),
        )
    )
    model.maxpool = nn.Identity()
    return model


# --------------------------------------------------------------------------- VGG16


@_model
def vgg16(*, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    """VGG-16 with BatchNorm (torchvision's cfg "D") and the CIFAR single-linear head.

    The five max-pools use ``ceil_mode=True`` so that inputs smaller than 32×32 stop
    shrinking at 1×1 instead of failing. 14.7 M parameters at width 1.
    """
    _check(num_classes, in_channels, width)
    cfg = [v if v == "M" else _scale(int(v), width) for v in torchvision.models.vgg.cfgs["D"]]
    features = torchvision.models.vgg.make_layers(cfg, batch_norm=True)
    # make_layers hard-codes 3 input channels and floor-mode pools
    features[0] = nn.Conv2d(in_channels, features[0].out_channels, 3, padding=1)
    for i, m in enumerate(features):
        if isinstance(m, nn.MaxPool2d):
            features[i] = nn.MaxPool2d(2, 2, ceil_mode=True)
    head = _head(int(cfg[-2]), num_classes, name="classifier")
    return _init_weights(nn.Sequential(OrderedDict([("features", features), *head])))


# --------------------------------------------------------------------- Wide ResNet


class _WideBlock(nn.Module):
    """Pre-activation basic block of a Wide ResNet: BN-ReLU-conv3×3-BN-ReLU-conv3×3."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.relu1(self.bn1(x))
        # the projection sees the pre-activated input, as in the authors' reference code
        identity = x if self.shortcut is None else self.shortcut(o)
        return self.conv2(self.relu2(self.bn2(self.conv1(o)))) + identity


def _wide_resnet(
    depth: int, widen: int, num_classes: int, in_channels: int, width: float
) -> nn.Module:
    """WRN-depth-widen of Zagoruyko & Komodakis (2016), without dropout."""
    _check(num_classes, in_channels, width)
    n = (depth - 4) // 6  # the paper's depth = 6n + 4: three groups of n two-conv blocks
    stem, *groups = (_scale(c, width) for c in (16, 16 * widen, 32 * widen, 64 * widen))
    parts: list[tuple[str, nn.Module]] = [
        ("conv1", nn.Conv2d(in_channels, stem, 3, stride=1, padding=1, bias=False))
    ]
    inplanes = stem
    for i, planes in enumerate(groups):
        blocks = [_WideBlock(inplanes, planes, stride=1 if i == 0 else 2)]
        blocks += [_WideBlock(planes, planes, stride=1) for _ in range(n - 1)]
        parts.append((f"block{i + 1}", nn.Sequential(*blocks)))
        inplanes = planes
    parts += [("bn", nn.BatchNorm2d(inplanes)), ("relu", nn.ReLU(inplace=True))]
    return _init_weights(nn.Sequential(OrderedDict(parts + _head(inplanes, num_classes))))


@_model
def wrn_40_2(*, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    """Wide ResNet 40-2 (6 blocks per group, widening 2); 2.2 M parameters at width 1."""
    return _wide_resnet(40, 2, num_classes, in_channels, width)


@_model
def wrn_16_1(*, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    """Wide ResNet 16-1 (2 blocks per group, widening 1); 0.18 M parameters at width 1."""
    return _wide_resnet(16, 1, num_classes, in_channels, width)


# ------------------------------------------------------------------------ stages


def stage_outputs(model: nn.Module) -> list[str]:
    """Names of the modules whose outputs end the network's stages (its residual groups),
    input side first: where attention transfer compares feature maps (ALGORITHMS §4).

    A stage is a run of blocks at one spatial resolution; its output is that of its last
    block, before the next stage downsamples. Per family:

    * ResNet: ``layer1`` … ``layer4``; Wide ResNet: ``block1`` … ``block3`` (the residual
      groups, as in Zagoruyko & Komodakis's code);
    * ShuffleNetV2: ``stage2`` … ``stage4``;
    * MobileNetV2: the last inverted-residual block at each resolution (the block before
      each stride-2 block, and the last one; the final 1×1 expansion conv is the head);
    * VGG: the last activation before each max-pool (its five conv stages).

    Parameters
    ----------
    model : nn.Module
        A model built by :func:`build_model` (any width or input size).

    Returns
    -------
    list of str
        Module names as in ``model.named_modules()``.

    Raises
    ------
    InputError
        For a model with no stages of a family listed above (e.g. a user-registered one).

    Examples
    --------
    >>> stage_outputs(build_model("wrn_16_1"))
    ['block1', 'block2', 'block3']
    """
    children = dict(model.named_children())
    if isinstance(model, torchvision.models.MobileNetV2):
        blocks = list(model.features)[1:-1]  # between the stem and the 1x1 head conv
        ends = [i for i in range(1, len(blocks)) if blocks[i].stride != 1] + [len(blocks)]
        return [f"features.{i}" for i in ends]  # features.i is blocks[i - 1]
    if isinstance(model, torchvision.models.ShuffleNetV2):
        return [n for n in children if re.fullmatch(r"stage\d+", n)]
    for pattern in (r"layer\d+", r"block\d+"):  # ResNet, Wide ResNet
        groups = [n for n in children if re.fullmatch(pattern, n)]
        if groups:
            return groups
    features = children.get("features")
    if isinstance(features, nn.Sequential) and any(isinstance(m, nn.MaxPool2d) for m in features):  # VGG
        mods = list(features)
        return [f"features.{i - 1}" for i, m in enumerate(mods) if isinstance(m, nn.MaxPool2d) and i > 0]
    raise InputError(
        f"{type(model).__name__} has no residual groups or stages compressflow knows (attention transfer compares "
        f"the outputs of a network's stages); supported families: resnet*, wrn_*, mobilenet_v2, shufflenet_v2, vgg16"
    )


# ------------------------------------------------------------------------ lookup


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
