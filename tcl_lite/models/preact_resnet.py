"""PreAct ResNet-18 with the CIFAR stem, in three forms.

* ``preact_resnet18``: the TCL reference's own variant, the network the paper trained. The stem is
  conv -> norm -> ReLU, and each block adds its *pre-activated* input ``a = ReLU(BN1(x))`` (or a 1x1
  conv of ``a``) to ``conv2(ReLU(BN2(conv1(a))))``.
* ``preact_resnet18_he``: He et al.'s pre-activation ResNet (2016, v2): a bare stem conv, and the
  identity branch carries the block input ``x`` itself. This was tcl_lite's ``preact_resnet18``
  before model layout 2 (``models/layout.py``); its state-dict keys are unchanged.

The first two end in norm -> ReLU -> average pooling. ``final_norm=False`` drops that last norm + ReLU (the
DivideMix form, which pools layer4's output directly).

* ``preact_resnet18_dividemix``: DivideMix's encoder (LiJunnan1992/DivideMix, PreResNet.py ``ResNet18``):
  the TCL reference's stem and blocks with ``final_norm=False``, and PyTorch's default initialisation
  (that file has no initialisation code; the other two forms use torchvision's Kaiming-normal).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn

from tcl_lite.models.encoder import Encoder, init_conv_and_norm, norm2d


class PreActBasicBlock(nn.Module):
    """``a = ReLU(norm1(x))``; ``out = conv2(ReLU(norm2(conv1(a)))) + shortcut``.

    ``shortcut`` is a 1x1 conv of ``a`` when the shape changes; otherwise ``a`` itself
    (``preactivated_identity``, the TCL reference) or the block input ``x`` (He et al.).
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, norm: str = "batch",
                 preactivated_identity: bool = True) -> None:
        super().__init__()
        bias = norm == "none"  # a norm layer after the conv makes its bias redundant
        self.bn1 = norm2d(norm, in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=bias)
        self.bn2 = norm2d(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=bias)
        # In place only after a real norm layer, whose output is a fresh tensor. With norm=none the
        # ReLU would overwrite the block input: He's identity branch, or a tensor an earlier layer
        # saved for its backward (the stem's ReLU output).
        self.relu = nn.ReLU(inplace=norm != "none")
        self.preactivated_identity = preactivated_identity
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        a = self.relu(self.bn1(x))
        if self.shortcut is not None:
            shortcut = self.shortcut(a)
        else:
            shortcut = a if self.preactivated_identity else x
        out = self.conv2(self.relu(self.bn2(self.conv1(a))))
        return out + shortcut


class PreActResNet(Encoder):
    """CIFAR stem (3x3 conv, stride 1, no max-pool), four stages of PreAct basic blocks
    (64/128/256/512 channels, strides 1/2/2/2), then [norm + ReLU] and average pooling.

    ``stem_norm``: the stem is conv -> norm -> ReLU (reference) rather than a bare conv (He).
    ``preactivated_identity``: see ``PreActBasicBlock``. ``final_norm``: norm + ReLU before pooling.
    ``kaiming_init``: torchvision's initialisation (``init_conv_and_norm``); False keeps PyTorch's defaults.
    The reference pools with a fixed 4x4 window, which is global pooling at 32 px; the adaptive
    pool is the same there and also accepts other sizes (from 8 px).
    """

    def __init__(self, layers: Sequence[int] = (2, 2, 2, 2), norm: str = "batch", in_channels: int = 3, *,
                 stem_norm: bool = True, preactivated_identity: bool = True, final_norm: bool = True,
                 kaiming_init: bool = True) -> None:
        widths = (64, 128, 256, 512)
        conv = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=norm == "none")
        stem: nn.Module = conv
        if stem_norm:
            stem = nn.Sequential(OrderedDict(conv=conv, norm=norm2d(norm, widths[0]),
                                             relu=nn.ReLU(inplace=norm != "none")))
        stages = []
        in_planes = widths[0]
        for i, (planes, blocks) in enumerate(zip(widths, layers, strict=True)):
            strides = [1 if i == 0 else 2] + [1] * (blocks - 1)
            stage = []
            for stride in strides:
                stage.append(PreActBasicBlock(in_planes, planes, stride, norm, preactivated_identity))
                in_planes = planes
            stages.append(nn.Sequential(*stage))
        head = [norm2d(norm, in_planes), nn.ReLU(inplace=norm != "none")] if final_norm else []
        pool = nn.Sequential(*head, nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        super().__init__(stem, stages, pool, out_dim=in_planes)
        if kaiming_init:
            init_conv_and_norm(self)


def preact_resnet18(norm: str = "batch", in_channels: int = 3) -> PreActResNet:
    """The TCL reference's encoder (stem norm, pre-activated identity): 512-d features."""
    return PreActResNet((2, 2, 2, 2), norm=norm, in_channels=in_channels)


def preact_resnet18_he(norm: str = "batch", in_channels: int = 3) -> PreActResNet:
    """He et al.'s pre-activation ResNet-18 with the CIFAR stem (bare stem conv, identity = x)."""
    return PreActResNet((2, 2, 2, 2), norm=norm, in_channels=in_channels, stem_norm=False,
                        preactivated_identity=False)


def preact_resnet18_dividemix(norm: str = "batch", in_channels: int = 3) -> PreActResNet:
    """DivideMix's encoder: the TCL reference's stem and blocks, no final norm + ReLU (layer4's output is
    pooled straight into the classifier), PyTorch's default initialisation as DivideMix's PreResNet.py."""
    return PreActResNet((2, 2, 2, 2), norm=norm, in_channels=in_channels, final_norm=False, kaiming_init=False)
