"""torchvision's ImageNet ResNets as encoders, optionally with ImageNet weights (e.g. Clothing1M)."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torchvision import models as tvm

from tcl_lite.errors import ModelError
from tcl_lite.models.encoder import Encoder, norm2d_factory

# arch -> (constructor, weights enum, feature size)
_BUILDERS: dict[str, tuple[Callable[..., tvm.ResNet], type[tvm.WeightsEnum], int]] = {
    "resnet18": (tvm.resnet18, tvm.ResNet18_Weights, 512),
    "resnet34": (tvm.resnet34, tvm.ResNet34_Weights, 512),
    "resnet50": (tvm.resnet50, tvm.ResNet50_Weights, 2048),
}
TORCHVISION_ARCHS = tuple(_BUILDERS)


def hub_checkpoint_dir() -> str:
    """The folder torch hub downloads weights into (follows $TORCH_HOME)."""
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def imagenet_state_dict(arch: str) -> dict[str, Any]:
    """torchvision's DEFAULT ImageNet weights of ``arch``, from the hub cache or the network."""
    weights = _BUILDERS[arch][1].DEFAULT
    filename = os.path.basename(weights.url)
    folder = hub_checkpoint_dir()
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as err:  # offline, proxy, truncated or corrupt file: all have the same fix
        raise ModelError(
            f"model.arch={arch} with model.pretrained=true: cannot load the ImageNet weights "
            f"{filename} ({type(err).__name__}: {err}). torch hub looks for them in {folder} and "
            f"downloads them from {weights.url} when missing. Fix: set model.pretrained=false, or "
            f"place {filename} in {folder}."
        ) from err


def adapt_input_conv(weight: Tensor, in_channels: int) -> Tensor:
    """RGB first-conv weights [O, 3, k, k] for ``in_channels`` inputs. One channel gets the sum
    (the same response to a grey image); otherwise the RGB filters are cycled and scaled by
    3/in_channels so activations keep their scale (exact for grey images when 3 divides it)."""
    if in_channels == weight.shape[1]:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_channels // weight.shape[1])
    return weight.repeat(1, repeats, 1, 1)[:, :in_channels] * (weight.shape[1] / in_channels)


class TorchvisionResNet(Encoder):
    """torchvision's ResNet split as stem = conv1/bn1/relu/maxpool, stages = layer1..4,
    pool = avgpool + flatten; its 1000-way ``fc`` is dropped. Down-samples 32x."""

    def __init__(self, arch: str = "resnet18", *, norm: str = "batch", in_channels: int = 3,
                 pretrained: bool = False) -> None:
        if arch not in _BUILDERS:
            raise ModelError(f"model.arch={arch!r} is not one of {', '.join(TORCHVISION_ARCHS)}")
        if pretrained and norm != "batch":
            # The ImageNet weights include BatchNorm running statistics, which GroupNorm cannot use.
            raise ModelError(f"model.arch={arch} with model.pretrained=true needs model.norm=batch "
                             f"(got {norm}); or set model.pretrained=false")
        constructor, _, out_dim = _BUILDERS[arch]
        net = constructor(weights=None, norm_layer=norm2d_factory(norm))
        if pretrained:
            state = imagenet_state_dict(arch)
            state["conv1.weight"] = adapt_input_conv(state["conv1.weight"], in_channels)
        if in_channels != 3:
            old = net.conv1
            net.conv1 = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                                  bias=False)
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        if pretrained:
            net.load_state_dict(state)
        stem = nn.Sequential(OrderedDict(conv1=net.conv1, bn1=net.bn1, relu=net.relu, maxpool=net.maxpool))
        stages = [net.layer1, net.layer2, net.layer3, net.layer4]
        super().__init__(stem, stages, nn.Sequential(net.avgpool, nn.Flatten(1)), out_dim=out_dim)
        self.arch = arch
