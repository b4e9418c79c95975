"""DivideMix's network: model.arch=preact_resnet18_dividemix with model.head=linear (dividemix.md, Networks)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from tcl_lite.config import ModelConfig, load_config
from tcl_lite.models.archs import ARCHS
from tcl_lite.models.layout import model_layout
from tcl_lite.models.network import Network, build_model


def make(num_classes: int = 10, seed: int = 0, arch: str = "preact_resnet18_dividemix") -> Network:
    torch.manual_seed(seed)
    return build_model(ModelConfig(arch=arch, head="linear"), num_classes)


def _conv(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k * k  # no bias: every conv is followed by a BatchNorm (or feeds a sum)


def _bn(c: int) -> int:
    return 2 * c  # weight and bias


def _block(c_in: int, c_out: int) -> int:
    """bn1(c_in), conv1 3x3, bn2(c_out), conv2 3x3, and a 1x1 conv shortcut where the shape changes."""
    shortcut = _conv(c_in, c_out, 1) if c_in != c_out else 0
    return _bn(c_in) + _conv(c_in, c_out, 3) + _bn(c_out) + _conv(c_out, c_out, 3) + shortcut


def test_parameter_count_is_the_hand_computed_one() -> None:
    stem = _conv(3, 64, 3) + _bn(64)
    stages = (2 * _block(64, 64) + _block(64, 128) + _block(128, 128) + _block(128, 256) + _block(256, 256)
              + _block(256, 512) + _block(512, 512))
    classifier = 512 * 10 + 10
    expected = stem + stages + classifier  # no final BN, no projector
    assert expected == 11_171_274
    assert sum(p.numel() for p in make().parameters()) == expected
    # the TCL reference encoder has exactly one more layer: the final BatchNorm2d(512)
    tcl = make(arch="preact_resnet18").encoder
    assert sum(p.numel() for p in tcl.parameters()) == expected - classifier + _bn(512)


def test_classifier_is_one_linear_layer_and_there_is_no_projector() -> None:
    model = make()
    assert type(model.classifier) is nn.Linear
    assert (model.classifier.in_features, model.classifier.out_features) == (512, 10)
    assert model.classifier.bias is not None
    assert model.projector is None


def test_layer4_output_is_pooled_straight_into_the_classifier() -> None:
    model = make().eval()
    encoder = model.encoder
    assert [type(m) for m in encoder.pool] == [nn.AdaptiveAvgPool2d, nn.Flatten]  # no norm / ReLU
    seen: dict[str, torch.Tensor] = {}
    encoder.stages[-1].register_forward_hook(lambda m, i, o: seen.__setitem__("layer4", o))
    encoder.pool[0].register_forward_pre_hook(lambda m, i: seen.__setitem__("pool_in", i[0]))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x)
    assert seen["pool_in"] is seen["layer4"]
    assert (seen["layer4"] < 0).any()  # a ReLU there would have removed the negative values
    torch.testing.assert_close(out.features, F.avg_pool2d(seen["layer4"], 4).flatten(1))  # reference: 4x4 pool
    torch.testing.assert_close(out.logits, model.classifier(out.features))


def test_stem_and_blocks_are_the_tcl_reference_encoders() -> None:
    dividemix, tcl = make().encoder, make(arch="preact_resnet18").encoder
    stem = list(dividemix.stem.children())
    assert [type(m) for m in stem] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert all(block.preactivated_identity for stage in dividemix.stages for block in stage)
    # the same state-dict keys except the TCL encoder's final norm (pool.0)
    tcl_keys = {k for k in tcl.state_dict() if not k.startswith("pool.0.")}
    assert set(dividemix.state_dict()) == tcl_keys
    assert sum(isinstance(m, _BatchNorm) for m in dividemix.modules()) == 1 + 2 * 8


def test_pytorch_default_initialisation() -> None:
    # DivideMix's PreResNet.py has no initialisation code: Conv2d keeps kaiming_uniform(a=sqrt(5)), whose
    # bound is 1/sqrt(fan_in); the Kaiming-normal (fan_out) of the other forms exceeds it.
    def within_default_bound(encoder: nn.Module) -> bool:
        convs = [m for m in encoder.modules() if isinstance(m, nn.Conv2d)]
        return all(m.weight.abs().max() <= 1 / math.sqrt(m.weight[0].numel()) for m in convs)

    assert within_default_bound(make().encoder)
    assert not within_default_bound(make(arch="preact_resnet18").encoder)


def test_arch_is_accepted_by_the_config_and_has_layout_1() -> None:
    assert "preact_resnet18_dividemix" in ARCHS
    cfg = load_config(None, ["model.arch=preact_resnet18_dividemix", "model.head=linear"])
    assert cfg.model.arch == "preact_resnet18_dividemix"
    assert model_layout("preact_resnet18_dividemix") == 1  # a new name: nothing earlier to tell apart
