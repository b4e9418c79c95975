"""ProMix's ResNet-18 (Justherozen/ProMix, model.py ``ResNet18``): post-activation, CIFAR stem.

Post-activation basic blocks ``ReLU(norm2(conv2(ReLU(norm1(conv1(x))))) + shortcut(x))`` with a 1x1
conv + norm shortcut where the shape changes; a 3x3 stride-1 stem conv -> norm -> ReLU and no max-pool;
widths 64/128/256/512 at strides 1/2/2/2; global average pooling to 512 features. Initialisation as the
reference: convolutions Kaiming-normal (fan_out), norm scales 1 and shifts 0.

Only the encoder: ProMix's two heads (primary h and auxiliary pseudo head h_AP) are ``Linear(512, K)``
with PyTorch's default initialisation. The reference also builds a projection MLP (512-512-ReLU-128,
L2-normalised) that its training forwards compute but no loss uses; it is left out here.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from tcl_lite.models.encoder import Encoder, init_conv_and_norm, norm2d


class BasicBlock(nn.Module):
    """The reference's (post-activation) ``BasicBlock``; its attribute names (conv1, bn1, conv2, bn2,
    shortcut) so that its state-dict keys match the reference's block keys."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, norm: str = "batch") -> None:
        super().__init__()
        bias = norm == "none"  # a norm layer after the conv makes its bias redundant
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=bias)
        self.bn1 = norm2d(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=bias)
        self.bn2 = norm2d(norm, planes)
        self.relu = nn.ReLU(inplace=True)  # on fresh tensors only: a norm/conv output, then the sum
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=bias),
                                          norm2d(norm, planes))

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + self.shortcut(x))


class ResNetCifar(Encoder):
    """ProMix's ResNet encoder: stem, four stages of ``BasicBlock``, average pooling (``out_dim`` 512)."""

    def __init__(self, layers: tuple[int, ...] = (2, 2, 2, 2), norm: str = "batch", in_channels: int = 3) -> None:
        widths = (64, 128, 256, 512)
        stem = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=norm == "none"),
            norm=norm2d(norm, widths[0]), relu=nn.ReLU(inplace=True)))
        stages = []
        in_planes = widths[0]
        for i, (planes, blocks) in enumerate(zip(widths, layers, strict=True)):
            strides = [1 if i == 0 else 2] + [1] * (blocks - 1)
            stage = []
            for stride in strides:
                stage.append(BasicBlock(in_planes, planes, stride, norm))
                in_planes = planes
            stages.append(nn.Sequential(*stage))
        pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        super().__init__(stem, stages, pool, out_dim=in_planes)
        init_conv_and_norm(self)


def build_resnet18_cifar(in_channels: int = 3, norm: str = "batch") -> ResNetCifar:
    """ProMix's ResNet-18 encoder (2 blocks per stage): images [B, C, H, W] -> features [B, 512]."""
    return ResNetCifar((2, 2, 2, 2), norm=norm, in_channels=in_channels)
