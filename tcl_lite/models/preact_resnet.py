"""PreAct ResNet-18 with the CIFAR stem: the reference encoder of TCL (He et al., 2016, v2)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from tcl_lite.models.network import Encoder, init_conv_and_norm, norm2d


class PreActBasicBlock(nn.Module):
    """norm - ReLU - conv3x3 - norm - ReLU - conv3x3, plus the identity (or a 1x1 projection of the
    pre-activated input when the shape changes)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, norm: str = "batch") -> None:
        super().__init__()
        bias = norm == "none"  # a norm layer after the conv makes its bias redundant
        self.bn1 = norm2d(norm, in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=bias)
        self.bn2 = norm2d(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=bias)
        # In place only after a real norm layer: with norm=none it would overwrite the block input,
        # which is also the identity branch.
        self.relu = nn.ReLU(inplace=norm != "none")
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(x))
        identity = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + identity


class PreActResNet(Encoder):
    """CIFAR stem (3x3 conv, stride 1, no max-pool), four stages of PreAct basic blocks
    (64/128/256/512 channels, strides 1/2/2/2), final norm + ReLU, global average pooling.

    The reference pools with a fixed 4x4 window, which is the same thing at 32 px; the adaptive
    pool also accepts other sizes (from 8 px)."""

    def __init__(self, layers: Sequence[int] = (2, 2, 2, 2), norm: str = "batch",
                 in_channels: int = 3) -> None:
        widths = (64, 128, 256, 512)
        stem = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=norm == "none")
        stages = []
        in_planes = widths[0]
        for i, (planes, blocks) in enumerate(zip(widths, layers, strict=True)):
            strides = [1 if i == 0 else 2] + [1] * (blocks - 1)
            stage = []
            for stride in strides:
                stage.append(PreActBasicBlock(in_planes, planes, stride, norm))
                in_planes = planes
            stages.append(nn.Sequential(*stage))
        pool = nn.Sequential(norm2d(norm, in_planes), nn.ReLU(inplace=norm != "none"),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        super().__init__(stem, stages, pool, out_dim=in_planes)
        init_conv_and_norm(self)


def preact_resnet18(norm: str = "batch", in_channels: int = 3) -> PreActResNet:
    """The reference encoder: 512-d features, ~11.17M parameters."""
    return PreActResNet((2, 2, 2, 2), norm=norm, in_channels=in_channels)
