"""What every encoder shares: the ``Encoder`` base (stage-wise activation checkpointing with BatchNorm
buffers kept exact), normalisation layers and initialisation. The encoder modules (tiny_cnn,
preact_resnet, torchvision_resnet) build on it; ``network.py`` builds them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from tcl_lite.errors import ModelError

NORMS = ("batch", "group", "none")



# ---------------------------------------------------------------------------------------------
# Normalisation layers shared by the encoders


def group_count(channels: int, max_groups: int = 32, min_group_size: int = 4) -> int:
    """Groups of a GroupNorm over ``channels``: up to 32 (the GroupNorm paper's default) but with at
    least ``min_group_size`` channels per group, so narrow layers do not degrade to InstanceNorm."""
    limit = max(1, min(max_groups, channels // min_group_size))
    return next(g for g in range(limit, 0, -1) if channels % g == 0)


def _group_norm(channels: int) -> nn.Module:
    return nn.GroupNorm(group_count(channels), channels)


def _no_norm(channels: int) -> nn.Module:
    return nn.Identity()


def norm2d(kind: str, channels: int) -> nn.Module:
    """The 2-D normalisation layer ``kind`` (``batch``, ``group`` or ``none``) for ``channels``."""
    return norm2d_factory(kind)(channels)


def norm2d_factory(kind: str) -> Callable[[int], nn.Module]:
    """A ``channels -> module`` callable (torchvision's ``norm_layer`` contract) for ``kind``.

    Module-level functions rather than lambdas, so models stay picklable and deep-copyable."""
    if kind == "batch":
        return nn.BatchNorm2d
    if kind == "group":
        return _group_norm
    if kind == "none":
        return _no_norm
    raise ModelError(f"model.norm={kind!r} is not one of {', '.join(NORMS)}")


# ---------------------------------------------------------------------------------------------
# Encoder base with per-stage activation checkpointing


def batchnorm_buffers(module: nn.Module) -> list[Tensor]:
    """Running statistics (and batch counters) of every BatchNorm in ``module``."""
    return [b for m in module.modules() if isinstance(m, _BatchNorm) for b in m.buffers(recurse=False)]


class KeepBuffers:
    """Recomputation context: undo whatever the body does to ``buffers`` (BatchNorm statistics).

    Non-reentrant checkpointing recomputes a stage's forward during backward, in train mode, so
    every BatchNorm in it would update ``running_mean``/``running_var`` (and ``num_batches_tracked``)
    a second time for the same batch. The outputs of the recomputation only depend on the batch
    statistics, so restoring the buffers afterwards leaves the gradients untouched and the running
    statistics exactly as without checkpointing. The copies are a few floats per channel; ``__exit__``
    also runs on checkpoint's early stop, which aborts recomputation by raising.

    A class rather than a ``@contextmanager``: checkpoint builds the context once per forward but
    may recompute several times (``retain_graph`` / double backward), so it must be re-enterable.
    """

    def __init__(self, buffers: list[Tensor]) -> None:
        self.buffers = buffers
        self.saved: list[list[Tensor]] = []

    def __enter__(self) -> None:
        self.saved.append([b.clone() for b in self.buffers])

    def __exit__(self, *exc_info: object) -> None:
        with torch.no_grad():
            for buf, value in zip(self.buffers, self.saved.pop(), strict=True):
                # .data: a restore must not bump the autograd version, since a second-order graph
                # (MLNT's fast step) may have saved these statistics.
                buf.data.copy_(value)


def checkpoint_stage(stage: nn.Module, x: Tensor) -> Tensor:
    """``stage(x)``, keeping only ``x`` for backward and recomputing the stage there."""
    # Bind the tensors the stage holds now: recomputation runs in backward, possibly after
    # torch.func.functional_call (e.g. fast weights) has put the module's own tensors back, and
    # would then silently differentiate other weights than the forward used.
    tensors = {**dict(stage.named_parameters()), **dict(stage.named_buffers())}
    stats = batchnorm_buffers(stage)
    return checkpoint(partial(functional_call, stage, tensors), x, use_reentrant=False,
                      context_fn=lambda: (contextlib.nullcontext(), KeepBuffers(stats)))


class Encoder(nn.Module):
    """``stem -> stages -> pool``, mapping images [B, C, H, W] to features [B, out_dim].

    With ``activation_checkpointing`` set (it may be toggled after construction), each stage keeps
    only its input during a training forward and is recomputed in backward; the RNG state is
    replayed, BatchNorm running statistics are updated once, as without checkpointing, and the
    recomputation uses the weights of the forward, also under ``torch.func.functional_call``.
    """

    def __init__(self, stem: nn.Module, stages: Sequence[nn.Module], pool: nn.Module, out_dim: int) -> None:
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.pool = pool
        self.out_dim = out_dim
        self.activation_checkpointing = False

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        # Without a graph there is nothing to save, so checkpointing would only cost time.
        recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for stage in self.stages:
            if recompute:
                x = checkpoint_stage(stage, x)
            else:
                x = stage(x)
        return self.pool(x)


def init_conv_and_norm(module: nn.Module) -> None:
    """torchvision's ResNet initialisation: Kaiming-normal (fan_out) convolutions, unit norm scales."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (_BatchNorm, nn.GroupNorm)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
