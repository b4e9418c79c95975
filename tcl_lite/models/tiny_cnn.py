"""A small, fast CNN for tests and the embedded 8x8 digits (resized to 8..32 px)."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from tcl_lite.models.encoder import Encoder, init_conv_and_norm, norm2d


def conv_norm_relu(in_channels: int, out_channels: int, norm: str, stride: int = 1) -> nn.Sequential:
    """conv3x3 - norm - ReLU; the convolution has a bias only when no norm layer follows it."""
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=norm == "none"),
        norm=norm2d(norm, out_channels),
        relu=nn.ReLU(inplace=True),
    ))


class TinyCNN(Encoder):
    """Stem conv at full resolution, then 3 stages of [stride-2 conv, conv] with widths w, 2w, 4w,
    then global average pooling: out_dim = 4w. Down-samples 8x, so 8 px inputs end at 1x1."""

    def __init__(self, width: int = 32, norm: str = "batch", in_channels: int = 3) -> None:
        widths = (width, 2 * width, 4 * width)
        stem = conv_norm_relu(in_channels, width, norm)
        stages = []
        previous = width
        for w in widths:
            # Down-sampling first keeps the costly full-resolution work to the single stem conv.
            stages.append(nn.Sequential(conv_norm_relu(previous, w, norm, stride=2),
                                        conv_norm_relu(w, w, norm)))
            previous = w
        pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        super().__init__(stem, stages, pool, out_dim=widths[-1])
        init_conv_and_norm(self)
