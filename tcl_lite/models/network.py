"""The network: an encoder, a classifier head and an optional projector, run in one forward.

``Network.forward`` computes everything a method needs (logits, projection, features) so that
the whole model can be wrapped once by DDP / Accelerate and called once per step.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from tcl_lite.config import ModelConfig
from tcl_lite.errors import ModelError
from tcl_lite.models.archs import ARCHS
from tcl_lite.models.encoder import Encoder, norm2d_factory
from tcl_lite.models.heads import build_classifier, build_projector
from tcl_lite.models.preact_resnet import preact_resnet18, preact_resnet18_dividemix, preact_resnet18_he
from tcl_lite.models.timm_backbone import TimmEncoder
from tcl_lite.models.tiny_cnn import TinyCNN
from tcl_lite.models.torchvision_resnet import TORCHVISION_ARCHS, TorchvisionResNet

# ---------------------------------------------------------------------------------------------
# The network


class NetworkOutput(NamedTuple):
    logits: Tensor  # [B, K]
    proj: Tensor | None  # [B, proj_dim], L2-normalised; None without a projector
    features: Tensor  # [B, d], the encoder output


class Network(nn.Module):
    """Encoder with a classifier head and an optional projector head on the same features."""

    def __init__(self, encoder: Encoder, classifier: nn.Module, projector: nn.Module | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.classifier = classifier
        self.projector = projector

    def forward(self, x: Tensor) -> NetworkOutput:
        features = self.encoder(x)
        proj = self.projector(features) if self.projector is not None else None
        return NetworkOutput(self.classifier(features), proj, features)


def build_encoder(cfg: ModelConfig, *, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """The encoder named by ``cfg.arch``, with ``cfg.norm`` layers and ``in_channels`` inputs
    (``image_size``: only timm models with a fixed input size, such as ViTs, are built for it)."""
    norm2d_factory(cfg.norm)  # reject a bad norm before building anything
    if in_channels < 1:
        raise ModelError(f"in_channels must be >= 1, got {in_channels}")
    if cfg.arch.startswith("timm:"):
        return TimmEncoder(cfg.arch, in_channels=in_channels, image_size=image_size, pretrained=cfg.pretrained,
                           pretrained_path=cfg.pretrained_path)
    if cfg.pretrained_path:
        raise ModelError(f"model.pretrained_path is for timm models (model.arch=timm:<name>), not "
                         f"model.arch={cfg.arch}; clear it")
    if cfg.pretrained and cfg.arch not in TORCHVISION_ARCHS:
        raise ModelError(f"model.pretrained=true is only available for {', '.join(TORCHVISION_ARCHS)} and timm:<name>, "
                         f"not model.arch={cfg.arch}; set model.pretrained=false")
    if cfg.arch == "tiny_cnn":
        return TinyCNN(width=cfg.width, norm=cfg.norm, in_channels=in_channels)
    if cfg.arch == "preact_resnet18":
        return preact_resnet18(norm=cfg.norm, in_channels=in_channels)
    if cfg.arch == "preact_resnet18_he":
        return preact_resnet18_he(norm=cfg.norm, in_channels=in_channels)
    if cfg.arch == "preact_resnet18_dividemix":
        return preact_resnet18_dividemix(norm=cfg.norm, in_channels=in_channels)
    if cfg.arch in TORCHVISION_ARCHS:
        return TorchvisionResNet(cfg.arch, norm=cfg.norm, in_channels=in_channels, pretrained=cfg.pretrained)
    raise ModelError(f"model.arch={cfg.arch!r} is not one of {', '.join(ARCHS)}, timm:<name>")


def build_model(cfg: ModelConfig, num_classes: int, *, in_channels: int = 3, image_size: int = 32,
                with_projector: bool = False, activation_checkpointing: bool = False) -> Network:
    """Encoder + classifier (+ projector) as configured.

    ``image_size`` is only checked (and given to timm models of a fixed input size, e.g. ViTs):
    every other encoder ends in adaptive average pooling, so the architecture does not depend on it
    (tiny_cnn and the preact_resnet18 forms run from 8 px; the
    torchvision ResNets down-sample 32x and are meant for >= 32 px, where their maps are 1x1).
    """
    if num_classes < 1:
        raise ModelError(f"num_classes must be >= 1, got {num_classes}")
    if image_size < 1:
        raise ModelError(f"image_size must be >= 1, got {image_size}")
    encoder = build_encoder(cfg, in_channels=in_channels, image_size=image_size)
    encoder.activation_checkpointing = activation_checkpointing
    classifier = build_classifier(cfg.head, encoder.out_dim, num_classes, norm=cfg.norm, dropout=cfg.dropout)
    projector = build_projector(encoder.out_dim, cfg.proj_dim, norm=cfg.norm) if with_projector else None
    return Network(encoder, classifier, projector)
