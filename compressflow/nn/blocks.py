"""Replacement blocks for blockwise distillation (ALGORITHMS §3), registered in
:data:`compressflow.registries.BLOCKS`: the candidates of the paper's search,
(a) ``ds2`` — two depthwise-separable (DS) layers (the winner), (b) ``ds3``, (c) ``ds2_skip``,
(d) ``ds3_skip``. A DS layer is depthwise k×k + pointwise 1×1 + BatchNorm + ReLU; the first
maps C_in → C_out with the replaced conv's kernel, stride, padding and dilation, the rest
C_out → C_out. The target of a conv is a pre-activation (a BN follows it), so by default the
last layer has no ReLU and can output negative values. A block's output shape always equals
the replaced conv's."""

from __future__ import annotations

from torch import nn

from compressflow.errors import InputError
from compressflow.registries import BLOCKS

__all__ = ["DSLayer", "ReplacementBlock", "ds2", "ds2_skip", "ds3", "ds3_skip", "make_block"]


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


def _candidate(name: str, depth: int, skip: bool, doc: str):
    def build(conv: nn.Conv2d, *, final_relu: bool = False) -> nn.Module:
        return ReplacementBlock(conv, depth, skip=skip, final_relu=final_relu)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = doc
    return BLOCKS.register(build)


ds2 = _candidate("ds2", 2, False, "(a) Two DS layers — the candidate the paper's search selected.")
ds3 = _candidate("ds3", 3, False, "(b) Three DS layers.")
ds2_skip = _candidate("ds2_skip", 2, True, "(c) Two DS layers plus a skip connection.")
ds3_skip = _candidate("ds3_skip", 3, True, "(d) Three DS layers plus a skip connection.")


def make_block(name: str, conv: nn.Module, *, final_relu: bool = False) -> nn.Module:
    """The registered block ``name`` for ``conv`` (``BLOCKS.get`` lists valid names).

    ``conv`` is typically ``model.get_submodule(layer)``; anything but a ``Conv2d`` raises an
    :class:`~compressflow.errors.InputError` naming its type."""
    if not isinstance(conv, nn.Conv2d):
        raise InputError(f"block {name!r}: the layer it replaces is a {type(conv).__name__}, not a Conv2d")
    return BLOCKS.get(name)(conv, final_relu=final_relu)
