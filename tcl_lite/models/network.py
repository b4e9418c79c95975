"""The network: an encoder, a classifier head, an optional projector and optional extra heads, run in one forward.

``Network.forward`` computes everything a method needs (logits, projection, features) so that
the whole model can be wrapped once by DDP / Accelerate and called once per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from torch import Tensor, nn

from tcl_lite.config import ModelConfig
from tcl_lite.errors import ModelError
from tcl_lite.models.archs import check_weights
from tcl_lite.models.encoder import Encoder, norm2d_factory
from tcl_lite.models.heads import HEAD_KINDS, build_classifier, build_projector
from tcl_lite.registry import ARCHS

# ---------------------------------------------------------------------------------------------
# The network


@dataclass
class ModelSpec:
    """A network a method trains (``Method.model_specs``): the engine builds it from ``model.*`` and this
    spec, gives it an optimizer from ``optim.*`` and prepares, schedules, checkpoints and resumes both.
    The engine passes the spec through to ``build_model`` whole, so a new field needs no engine edit."""

    projector: bool = False  # with the projector head (contrastive methods)
    #: extra classifier heads on the same features, name -> head kind (``model.head``'s kinds: mlp, linear),
    #: e.g. ProMix's ``{"pseudo": "linear"}``; their logits are ``NetworkOutput.heads[name]``
    heads: dict[str, str] = field(default_factory=dict)


class NetworkOutput(NamedTuple):
    logits: Tensor  # [B, K]
    proj: Tensor | None  # [B, proj_dim], L2-normalised; None without a projector
    features: Tensor  # [B, d], the encoder output
    heads: dict[str, Tensor] = {}  # the extra heads' logits [B, K] by name (never mutated)


class Network(nn.Module):
    """Encoder with a classifier head, an optional projector head and optional extra classifier heads, all
    on the same features. The extra heads are a ``heads`` ModuleDict only when there are any, so a network
    without them keeps its state-dict keys (checkpoints of every earlier run load)."""

    def __init__(self, encoder: Encoder, classifier: nn.Module, projector: nn.Module | None = None,
                 heads: dict[str, nn.Module] | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.classifier = classifier
        self.projector = projector
        if heads:
            self.heads = nn.ModuleDict(heads)

    def forward(self, x: Tensor) -> NetworkOutput:
        features = self.encoder(x)
        proj = self.projector(features) if self.projector is not None else None
        heads = {name: head(features) for name, head in self.heads.items()} if "heads" in self._modules else {}
        return NetworkOutput(self.classifier(features), proj, features, heads)


def build_encoder(cfg: ModelConfig, *, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """The encoder registered as ``cfg.arch`` (``tcl_lite.registry.ARCHS``), with ``cfg.norm`` layers and
    ``in_channels`` inputs (``image_size``: only timm models with a fixed input size, such as ViTs, are built
    for it)."""
    norm2d_factory(cfg.norm)  # reject a bad norm before building anything
    if in_channels < 1:
        raise ModelError(f"in_channels must be >= 1, got {in_channels}")
    try:
        build = ARCHS.get_checked(cfg.arch)
    except ValueError as e:  # the registry's ConfigError, or a family member's check
        raise ModelError(str(e)) from None
    check_weights(cfg)
    return build(cfg, in_channels, image_size)


def build_model(cfg: ModelConfig, num_classes: int, *, in_channels: int = 3, image_size: int = 32,
                with_projector: bool = False, activation_checkpointing: bool = False,
                spec: ModelSpec | None = None) -> Network:
    """Encoder + classifier (+ projector, + extra heads) as configured by ``cfg`` and ``spec`` (default:
    ``ModelSpec(projector=with_projector)``).

    ``image_size`` is only checked (and given to timm models of a fixed input size, e.g. ViTs):
    every other encoder ends in adaptive average pooling, so the architecture does not depend on it
    (tiny_cnn and the preact_resnet18 forms run from 8 px; the
    torchvision ResNets down-sample 32x and are meant for >= 32 px, where their maps are 1x1).
    """
    spec = spec or ModelSpec(projector=with_projector)
    if num_classes < 1:
        raise ModelError(f"num_classes must be >= 1, got {num_classes}")
    if image_size < 1:
        raise ModelError(f"image_size must be >= 1, got {image_size}")
    for name, kind in spec.heads.items():
        if not name.isidentifier() or kind not in HEAD_KINDS:
            raise ModelError(f"extra head {name!r}: give a Python identifier as the name and one of "
                             f"{', '.join(HEAD_KINDS)} as the kind, not {kind!r}")
    encoder = build_encoder(cfg, in_channels=in_channels, image_size=image_size)
    encoder.activation_checkpointing = activation_checkpointing
    classifier = build_classifier(cfg.head, encoder.out_dim, num_classes, norm=cfg.norm, dropout=cfg.dropout)
    projector = build_projector(encoder.out_dim, cfg.proj_dim, norm=cfg.norm) if spec.projector else None
    heads = {name: build_classifier(kind, encoder.out_dim, num_classes, norm=cfg.norm, dropout=cfg.dropout)
             for name, kind in spec.heads.items()}
    return Network(encoder, classifier, projector, heads)
