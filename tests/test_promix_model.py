"""ProMix's ResNet-18 encoder (promix.md, Networks): structure, parameter count, shapes, checkpointing."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tcl_lite.models.encoder import Encoder
from tcl_lite.models.resnet_cifar import BasicBlock, build_resnet18_cifar


def _conv(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k * k  # no bias: every conv is followed by a BatchNorm


def _bn(c: int) -> int:
    return 2 * c


def _block(c_in: int, c_out: int) -> int:
    """conv1 3x3 + bn1, conv2 3x3 + bn2, and a 1x1 conv + bn shortcut where the shape changes."""
    shortcut = _conv(c_in, c_out, 1) + _bn(c_out) if c_in != c_out else 0
    return _conv(c_in, c_out, 3) + _bn(c_out) + _conv(c_out, c_out, 3) + _bn(c_out) + shortcut


def test_parameter_count_with_two_heads_is_the_hand_computed_one() -> None:
    stem = _conv(3, 64, 3) + _bn(64)
    stages = (2 * _block(64, 64) + _block(64, 128) + _block(128, 128) + _block(128, 256) + _block(256, 256)
              + _block(256, 512) + _block(512, 512))
    heads = 2 * (512 * 10 + 10)  # h and h_AP: Linear(512, 10)
    encoder = build_resnet18_cifar()
    count = sum(p.numel() for p in encoder.parameters()) + sum(
        p.numel() for head in (nn.Linear(512, 10), nn.Linear(512, 10)) for p in head.parameters())
    assert count == stem + stages + heads == 11_179_092


def test_structure_stem_blocks_and_no_max_pool() -> None:
    encoder = build_resnet18_cifar()
    assert isinstance(encoder, Encoder) and encoder.out_dim == 512 and len(encoder.stages) == 4
    conv = encoder.stem.conv
    assert (conv.kernel_size, conv.stride, conv.padding, conv.bias) == ((3, 3), (1, 1), (1, 1), None)
    assert isinstance(encoder.stem.norm, nn.BatchNorm2d) and isinstance(encoder.stem.relu, nn.ReLU)
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in encoder.modules())
    blocks = [b for stage in encoder.stages for b in stage]
    assert len(blocks) == 8 and all(isinstance(b, BasicBlock) for b in blocks)
    assert [b.conv1.stride[0] for b in blocks] == [1, 1, 2, 1, 2, 1, 2, 1]
    assert [b.conv2.out_channels for b in blocks] == [64, 64, 128, 128, 256, 256, 512, 512]
    shortcuts = [b for b in blocks if not isinstance(b.shortcut, nn.Identity)]
    assert shortcuts == [blocks[2], blocks[4], blocks[6]]
    for b in shortcuts:
        sc_conv, sc_norm = b.shortcut
        assert sc_conv.kernel_size == (1, 1) and sc_conv.stride == (2, 2) and isinstance(sc_norm, nn.BatchNorm2d)


def test_blocks_are_post_activation() -> None:
    """out = ReLU(bn2(conv2(ReLU(bn1(conv1(x))))) + shortcut(x)), computed here by hand (eval mode)."""
    torch.manual_seed(0)
    encoder = build_resnet18_cifar().eval()
    x = torch.randn(2, 64, 8, 8)
    for block in (encoder.stages[0][0], encoder.stages[1][0]):  # identity and 1x1 conv shortcut, both from 64
        with torch.no_grad():
            for bn in (block.bn1, block.bn2):  # non-trivial statistics
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
            a = F.relu(block.bn1(block.conv1(x)))
            expected = F.relu(block.bn2(block.conv2(a)) + block.shortcut(x))
            assert torch.allclose(block(x), expected, atol=1e-6)
            assert block(x).min() >= 0  # the output is activated (a pre-activation block's is not)


def test_initialisation_is_the_references() -> None:
    torch.manual_seed(0)
    encoder = build_resnet18_cifar()
    for m in encoder.modules():
        if isinstance(m, nn.Conv2d) and m.weight.numel() > 10_000:
            fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
            assert m.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.05)
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


@pytest.mark.parametrize("norm,layer", [("batch", nn.BatchNorm2d), ("group", nn.GroupNorm), ("none", nn.Identity)])
def test_norm_factory(norm: str, layer: type) -> None:
    encoder = build_resnet18_cifar(in_channels=1, norm=norm)
    block = encoder.stages[1][0]
    assert isinstance(block.bn1, layer) and isinstance(block.shortcut[1], layer)
    assert (block.conv1.bias is not None) == (norm == "none")
    assert encoder.stem.conv.in_channels == 1


def test_shapes_at_32_pixels() -> None:
    torch.manual_seed(0)
    encoder = build_resnet18_cifar().eval()
    x = torch.randn(2, 3, 32, 32)
    shapes = []
    with torch.no_grad():
        h = encoder.stem(x)
        shapes.append(tuple(h.shape))
        for stage in encoder.stages:
            h = stage(h)
            shapes.append(tuple(h.shape))
        assert tuple(encoder(x).shape) == (2, 512)
    assert shapes == [(2, 64, 32, 32), (2, 64, 32, 32), (2, 128, 16, 16), (2, 256, 8, 8), (2, 512, 4, 4)]


def test_per_stage_checkpointing_gives_the_same_gradient_and_statistics() -> None:
    torch.manual_seed(0)
    plain = build_resnet18_cifar().train()
    heads = nn.Linear(512, 10)
    ckpt = copy.deepcopy(plain)
    ckpt.activation_checkpointing = True
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 3, 5, 9])
    grads = []
    for encoder in (plain, ckpt):
        encoder.zero_grad()
        F.cross_entropy(heads(encoder(x)), y).backward()
        grads.append([p.grad.clone() for p in encoder.parameters()])
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    for a, b in zip(plain.buffers(), ckpt.buffers(), strict=True):
        assert torch.equal(a, b)  # BatchNorm statistics updated once, as without checkpointing
