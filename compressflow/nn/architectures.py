"""The architectures behind :mod:`compressflow.nn.models`' builders: CIFAR-stem ResNets on
torchvision's blocks, MobileNetV2, ShuffleNetV2, VGG16 with BatchNorm, and Wide ResNets; and
where each family's stages end (:func:`stage_outputs`). Imported when a model is built, not
when the model names are registered."""

from __future__ import annotations

import math
import re
from collections import OrderedDict

import torch
import torchvision
from torch import nn
from torchvision.models.mobilenetv2 import _make_divisible
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops.misc import Conv2dNormActivation

from compressflow.errors import InputError

__all__ = ["BasicBlock", "Bottleneck", "mobilenet_v2", "resnet", "shufflenet_v2", "stage_outputs", "vgg16", "wide_resnet"]


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


def resnet(
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


def wide_resnet(
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
        A model built by :func:`~compressflow.nn.models.build_model` (any width or input size).

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
    >>> from compressflow.nn.models import build_model
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


def mobilenet_v2(num_classes: int, in_channels: int, width: float) -> nn.Module:
    """torchvision's MobileNetV2 at ``width_mult=width`` with the CIFAR stem and strides."""
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


def shufflenet_v2(num_classes: int, in_channels: int, width: float) -> nn.Module:
    """torchvision's ShuffleNetV2 x1.0, channels scaled by ``width`` (even), with the CIFAR stem."""
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


def vgg16(num_classes: int, in_channels: int, width: float) -> nn.Module:
    """VGG-16 with BatchNorm, ceil-mode pools and the CIFAR single-linear head."""
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
