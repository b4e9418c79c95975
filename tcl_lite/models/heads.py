"""The classifier head g and the projector head f of the reference, on the encoder features."""

from __future__ import annotations

from collections import OrderedDict

import torch.nn.functional as F
from torch import Tensor, nn

from tcl_lite.errors import ModelError


def norm1d(kind: str, dim: int) -> nn.Module:
    """BatchNorm1d for ``batch``; LayerNorm for ``group`` (batch-independent, like the encoder's
    GroupNorm); nothing for ``none``."""
    if kind == "batch":
        return nn.BatchNorm1d(dim)
    if kind == "group":
        return nn.LayerNorm(dim)
    if kind == "none":
        return nn.Identity()
    raise ModelError(f"model.norm={kind!r} is not one of batch, group, none")


class MLPClassifier(nn.Sequential):
    """Linear(d,d) - norm - ReLU - Dropout - Linear(d,K) - norm(K), the reference classifier.

    The norm on the logits is BatchNorm1d(K) only for ``norm=batch`` (the reference); otherwise
    it is Identity: a LayerNorm over K logits would fix each sample's logit spread (for K=2 it
    maps every pair to +-1 before the affine), taking away the model's control of confidence.
    """

    def __init__(self, in_dim: int, num_classes: int, norm: str = "batch", dropout: float = 0.25) -> None:
        super().__init__(OrderedDict(
            fc1=nn.Linear(in_dim, in_dim),
            norm1=norm1d(norm, in_dim),
            relu=nn.ReLU(inplace=True),
            dropout=nn.Dropout(dropout),
            fc2=nn.Linear(in_dim, num_classes),
            norm2=nn.BatchNorm1d(num_classes) if norm == "batch" else nn.Identity(),
        ))


class Projector(nn.Sequential):
    """Linear(d,d) - norm - ReLU - Linear(d,proj_dim) - norm, output L2-normalised per sample."""

    def __init__(self, in_dim: int, proj_dim: int = 256, norm: str = "batch") -> None:
        super().__init__(OrderedDict(
            fc1=nn.Linear(in_dim, in_dim),
            norm1=norm1d(norm, in_dim),
            relu=nn.ReLU(inplace=True),
            fc2=nn.Linear(in_dim, proj_dim),
            norm2=norm1d(norm, proj_dim),
        ))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(super().forward(x), dim=1)


HEAD_KINDS = ("mlp", "linear")  # model.head, and the kinds of a method's extra heads (ModelSpec.heads)


def build_classifier(head: str, in_dim: int, num_classes: int, *, norm: str = "batch",
                     dropout: float = 0.25) -> nn.Module:
    """``head=mlp``: the reference MLP classifier; ``head=linear``: a single Linear(d, K)."""
    if head == "mlp":
        return MLPClassifier(in_dim, num_classes, norm=norm, dropout=dropout)
    if head == "linear":
        return nn.Linear(in_dim, num_classes)
    raise ModelError(f"model.head={head!r} is not one of {', '.join(HEAD_KINDS)}")


def build_projector(in_dim: int, proj_dim: int, *, norm: str = "batch") -> Projector:
    """The projector f with a ``proj_dim``-d L2-normalised output."""
    return Projector(in_dim, proj_dim, norm=norm)
