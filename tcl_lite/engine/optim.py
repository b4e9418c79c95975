"""The per-iteration learning-rate schedule (the optimizers are built by ``methods/build.py``)."""

from __future__ import annotations

import math

import torch

from tcl_lite.config import OptimConfig
from tcl_lite.methods.build import build_optimizer  # noqa: F401 - its former home; the builders live below


def peak_lr(cfg: OptimConfig, global_batch: int) -> float:
    """The reference scales the base lr linearly with the global batch: lr * B / 256."""
    return cfg.lr * global_batch / 256 if cfg.scale_lr else cfg.lr


def lr_at(cfg: OptimConfig, max_lr: float, epoch: float, total_epochs: int) -> float:
    """Learning rate at a fractional epoch (the engine sets it every iteration).

    cosine (reference): linear warm-up from 0 over ``warmup_epochs``, then
    ``min + (max - min) * (1 + cos(pi * (e - warmup) / total_epochs)) / 2`` with
    ``min = min_lr_ratio * max`` -- the divisor is the total epochs, as in the reference.
    ``schedule_unit=epoch``: ``e`` is the epoch's index (the lr is constant within an epoch).
    """
    if cfg.schedule_unit == "epoch":
        epoch = math.floor(epoch)
    if cfg.warmup_epochs > 0 and epoch < cfg.warmup_epochs:
        return max_lr * epoch / cfg.warmup_epochs
    if cfg.schedule == "cosine":
        min_lr = cfg.min_lr_ratio * max_lr
        return min_lr + (max_lr - min_lr) * (1 + math.cos(math.pi * (epoch - cfg.warmup_epochs) / total_epochs)) / 2
    if cfg.schedule == "step":
        return max_lr * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    return max_lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
