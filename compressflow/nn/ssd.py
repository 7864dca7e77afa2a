"""The SSD detectors behind :mod:`compressflow.nn.detection`' builders (torchvision's SSD and
SSDlite, from scratch, at CPU size); imported when a detector is built."""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn
from torchvision.models import mobilenet_v3_large
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD, SSDHead
from torchvision.models.detection.ssdlite import SSDLiteFeatureExtractorMobileNet, SSDLiteHead
from torchvision.models.vgg import cfgs, make_layers

from compressflow.errors import InputError

__all__ = ["ssd_vgg16", "ssdlite_mobilenet_v3"]

_DETECTION_DEFAULTS: dict[str, Any] = {"score_thresh": 0.01, "nms_thresh": 0.45, "detections_per_img": 100,
                                       "topk_candidates": 200}


def ssd_vgg16(num_classes: int, image_size: int, width: float) -> SSD:
    """SSD with a VGG16 backbone (SSD300-VGG16's layout: conv4_3 with L2 norm, dilated fc6,
    1×1 fc7, four extra stages; aspect ratios ``[2], [2, 3], [2, 3], [2, 3], [2], [2]``), with
    ``width`` × the channels, batch norm, and ``image_size`` × ``image_size`` inputs."""
    _check(num_classes, image_size, width)
    cfg = [v if v == "M" else max(8, int(v * width)) for v in cfgs["D"]]
    layers = make_layers(cfg, batch_norm=True)
    backbone = _VGGFeatures(layers, width)
    anchors = DefaultBoxGenerator([[2], [2, 3], [2, 3], [2, 3], [2], [2]],
                                  scales=[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05])
    out_channels = _out_channels(backbone, image_size)
    head = SSDHead(out_channels, anchors.num_anchors_per_location(), num_classes + 1)
    return SSD(backbone, anchors, (image_size, image_size), num_classes + 1, image_mean=[0.48235, 0.45882, 0.40784],
               image_std=[0.229, 0.224, 0.225], head=head, **_DETECTION_DEFAULTS)


def ssdlite_mobilenet_v3(num_classes: int, image_size: int, width: float) -> SSD:
    """SSDlite with a MobileNetV3-Large backbone (SSDlite320-MobileNetV3-Large's layout: C4
    expansion and C5 maps plus four depthwise extra stages, aspect ratios ``[2, 3]`` on all six),
    ``width_mult=width``, ``image_size`` × ``image_size`` inputs."""
    _check(num_classes, image_size, width)
    norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
    net = mobilenet_v3_large(weights=None, width_mult=width, reduced_tail=True, norm_layer=norm)
    features = net.features
    # C4 is the last strided block (torchvision's _mobilenet_extractor marks those with _is_cn)
    c4 = [i for i, block in enumerate(features) if getattr(block, "_is_cn", False)][-1]
    backbone = SSDLiteFeatureExtractorMobileNet(features, c4, norm, width_mult=width)
    for module in backbone.modules():  # torchvision's init without pretrained weights
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, mean=0.0, std=0.03)
            if module.bias is not None:
                nn.init.constant_(module.bias, 0.0)
    anchors = DefaultBoxGenerator([[2, 3] for _ in range(6)], min_ratio=0.2, max_ratio=0.95)
    out_channels = _out_channels(backbone, image_size)
    head = SSDLiteHead(out_channels, anchors.num_anchors_per_location(), num_classes + 1, norm)
    return SSD(backbone, anchors, (image_size, image_size), num_classes + 1, image_mean=[0.5, 0.5, 0.5],
               image_std=[0.5, 0.5, 0.5], head=head, **_DETECTION_DEFAULTS)


class _VGGFeatures(nn.Module):
    """SSD's VGG feature extractor (torchvision's ``SSDFeatureExtractorVGG``) for any channel
    count and small inputs: conv4_3 (L2-normalised, learned scale 20), fc7, and four padded
    stride-2 extra stages."""

    def __init__(self, layers: nn.Sequential, width: float) -> None:
        super().__init__()
        pools = [i for i, layer in enumerate(layers) if isinstance(layer, nn.MaxPool2d)]
        pool3 = layers[pools[2]]
        assert isinstance(pool3, nn.MaxPool2d)
        pool3.ceil_mode = True  # as SSD300: pool3 rounds up
        c4 = [m for m in layers[:pools[3]] if isinstance(m, nn.Conv2d)][-1].out_channels
        fc = max(16, int(1024 * width))
        self.features = nn.Sequential(*layers[:pools[3]])  # until conv4_3
        self.scale_weight = nn.Parameter(torch.ones(c4) * 20)
        c5 = [m for m in layers if isinstance(m, nn.Conv2d)][-1].out_channels
        fc67 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), nn.Conv2d(c5, fc, 3, padding=6, dilation=6),
                             nn.ReLU(inplace=True), nn.Conv2d(fc, fc, 1), nn.ReLU(inplace=True))
        chans = [fc] + [max(16, int(c * width)) for c in (512, 256, 256, 256)]
        extras = [nn.Sequential(nn.Conv2d(cin, cout // 2, 1), nn.ReLU(inplace=True),
                                nn.Conv2d(cout // 2, cout, 3, stride=2, padding=1), nn.ReLU(inplace=True))
                  for cin, cout in zip(chans[:-1], chans[1:])]
        self.extra = nn.ModuleList([nn.Sequential(*layers[pools[3]:-1], fc67), *extras])
        for module in [*fc67.modules(), *(m for e in extras for m in e.modules())]:
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0.0)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.features(x)
        out = [self.scale_weight.view(1, -1, 1, 1) * nn.functional.normalize(x)]
        for block in self.extra:
            x = block(x)
            out.append(x)
        return {str(i): v for i, v in enumerate(out)}


def _out_channels(backbone: nn.Module, image_size: int) -> list[int]:
    """Channels of each feature map (from one dummy forward, as torchvision's builders find them)."""
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        maps = backbone(torch.zeros(1, 3, image_size, image_size))
    backbone.train(was_training)
    return [v.shape[1] for v in maps.values()]


def _check(num_classes: Any, image_size: Any, width: Any) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise InputError(f"detector num_classes must be an integer >= 1 (foreground classes), got {num_classes!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 32:
        raise InputError(f"detector image_size must be an integer >= 32, got {image_size!r}")
    if isinstance(width, bool) or not isinstance(width, (int, float)) or width <= 0:
        raise InputError(f"detector width must be a number > 0, got {width!r}")
