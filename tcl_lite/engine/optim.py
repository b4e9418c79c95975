"""Optimizers (torch and bitsandbytes 8-bit) and the per-iteration learning-rate schedule."""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from tcl_lite.config import OptimConfig
from tcl_lite.errors import ConfigError


def _bitsandbytes_optim():  # noqa: ANN202 - returns the module or None
    try:
        import bitsandbytes.optim as bnb_optim
    except Exception as e:  # an ImportError, or a native library that fails to load
        warnings.warn(f"bitsandbytes could not be loaded ({type(e).__name__}: {e}); the 8-bit optimizer "
                      "falls back to its 32-bit form, which needs 4x the optimizer-state memory. "
                      "Fix: pip install bitsandbytes", RuntimeWarning, stacklevel=3)
        return None
    return bnb_optim


def build_optimizer(cfg: OptimConfig, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """``lr`` is the peak learning rate (already scaled); the schedule sets it every step."""
    params = [p for p in model.parameters() if p.requires_grad]
    name = cfg.name
    if name.endswith("8bit"):
        bnb_optim = _bitsandbytes_optim()
        if bnb_optim is not None:
            if name == "sgd8bit":
                if cfg.momentum == 0:
                    raise ConfigError("config key 'optim.momentum': bitsandbytes' 8-bit SGD needs momentum > 0 "
                                      "(its state is the momentum buffer); use optim.name=sgd without momentum")
                return bnb_optim.SGD8bit(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
            return bnb_optim.AdamW8bit(params, lr=lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
        name = name.removesuffix("8bit")
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


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
