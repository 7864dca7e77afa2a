"""The replacement-block modules of blockwise distillation (ALGORITHMS §3): a depthwise-separable
layer and a block of them, optionally with a skip connection. Registered as candidates in
:mod:`compressflow.nn.blocks`."""

from __future__ import annotations

from torch import nn

__all__ = ["DSLayer", "ReplacementBlock"]


class DSLayer(nn.Sequential):
    """Depthwise k×k conv (groups = C_in) + pointwise 1×1 conv + BatchNorm (+ ReLU)."""

    def __init__(self, c_in: int, c_out: int, kernel_size, stride=1, padding=0, dilation=1, relu: bool = True) -> None:
        layers = [
            nn.Conv2d(c_in, c_in, kernel_size, stride=stride, padding=padding, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ReplacementBlock(nn.Module):
    """``depth`` DS layers standing in for ``conv``, optionally with a skip connection
    (identity when shapes match, else a strided 1×1 conv + BN)."""

    def __init__(self, conv: nn.Conv2d, depth: int, skip: bool, final_relu: bool = False) -> None:
        super().__init__()
        c_in, c_out, k = conv.in_channels, conv.out_channels, conv.kernel_size
        same = tuple((kk - 1) * d // 2 for kk, d in zip(k, conv.dilation))
        layers = [DSLayer(c_in, c_out, k, conv.stride, conv.padding, conv.dilation, relu=depth > 1 or final_relu)]
        for i in range(1, depth):
            layers.append(DSLayer(c_out, c_out, k, 1, same, conv.dilation, relu=i < depth - 1 or final_relu))
        self.layers = nn.Sequential(*layers)
        self.skip: nn.Module | None = None
        if skip:
            self.skip = nn.Identity() if c_in == c_out and conv.stride == (1, 1) else nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=(conv.stride[0], conv.stride[1]), bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        y = self.layers(x)
        if self.skip is not None:
            s = self.skip(x)
            if s.shape[-2:] != y.shape[-2:]:  # the conv's padding may not be "same"
                s = nn.functional.adaptive_avg_pool2d(s, y.shape[-2:])
            y = y + s
        return y
