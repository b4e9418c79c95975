"""MLNT's schedules and the teacher's exponential moving average, as small pure functions.

The iteration ``it`` is ``StepInfo.global_step`` (optimizer steps already taken), which in the
first epoch is the reference's ``batch_idx``. The reference's conditions are kept exactly, strict
inequalities included:

* the meta (consistency) loss is on when ``it > start_iter`` in the first epoch, always later;
* during the ramp ``alpha = alpha_max * exp(-5 (1 - u)^2)`` with ``u = (it - start_iter) /
  (mid_iter - start_iter)``; once ``it > mid_iter`` (or after the first epoch) ``alpha = alpha_max``
  and the EMA decay switches from ``ema_decay_rampup`` to ``ema_decay``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

from tcl_lite.methods.mlnt.config import MLNTConfig


def meta_active(it: int, epoch: int, cfg: MLNTConfig) -> bool:
    """Whether the step at iteration ``it`` of ``epoch`` (0-based) has the meta loss (and an EMA update)."""
    return epoch > 0 or it > cfg.start_iter


def ramp_done(it: int, epoch: int, cfg: MLNTConfig) -> bool:
    """Past the ramp: alpha at its maximum, EMA decay at ``ema_decay``."""
    return epoch > 0 or it > cfg.mid_iter


def alpha_at(it: int, epoch: int, cfg: MLNTConfig) -> float:
    """Weight of the meta loss at this step; 0 before the meta loss starts."""
    if not meta_active(it, epoch, cfg):
        return 0.0
    if ramp_done(it, epoch, cfg):
        return cfg.alpha
    # start_iter < it <= mid_iter here, so mid_iter > start_iter: no division by zero.
    u = (it - cfg.start_iter) / (cfg.mid_iter - cfg.start_iter)
    return cfg.alpha * math.exp(-5.0 * (1.0 - u) ** 2)


def ema_decay_at(it: int, epoch: int, cfg: MLNTConfig) -> float:
    """Decay of the teacher update made at this step."""
    return cfg.ema_decay if ramp_done(it, epoch, cfg) else cfg.ema_decay_rampup


@torch.no_grad()
def ema_update_(teacher: Iterable[Tensor], student: Iterable[Tensor], decay: float) -> None:
    """``t <- decay * t + (1 - decay) * s`` in place, per tensor (the reference's mul_/add_).

    ``decay = 0`` is the first update, an exact copy. Only parameters are averaged, as in the
    reference: the teacher's BatchNorm statistics come from its own train-mode forwards.
    """
    for t, s in zip(teacher, student, strict=True):
        if decay == 0.0:
            t.copy_(s)
        else:
            t.mul_(decay).add_(s.detach(), alpha=1.0 - decay)
