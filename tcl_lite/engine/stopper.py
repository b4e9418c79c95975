"""Stop cleanly before a Colab/Kaggle limit (time budget) or on SIGTERM / Ctrl-C, with a checkpoint."""

from __future__ import annotations

import time
from typing import Any

import torch

from tcl_lite import signals


class Stopper:
    """Decides, after each optimizer step, whether to checkpoint and exit now.

    The margin is twice the slowest step seen, plus how long the last save took, plus the
    epoch-end work when the epoch is about to end: stopping later would risk the platform
    killing the process mid-save. Under data parallelism all processes agree (max-reduce).
    """

    def __init__(self, budget_seconds: float | None, accelerator: Any) -> None:
        self.budget_seconds = budget_seconds
        self.start_clock()
        self.accelerator = accelerator
        self.max_step = 0.0
        self.save_seconds = 0.0
        self.epoch_end_seconds = 0.0
        # Platforms send SIGTERM some seconds before they kill the process; the handlers (tcl_lite/signals.py)
        # are installed by train.py's first line or by train(): here they are only read.

    @property
    def signalled(self) -> bool:
        return signals.stop_requested() is not None

    def start_clock(self) -> None:
        """Count the time budget from now: the training loop onwards (start-up is not counted)."""
        self.start = time.monotonic()
        self.deadline = None if self.budget_seconds is None else self.start + self.budget_seconds

    def signal_received(self) -> bool:
        """Whether any process got SIGTERM or Ctrl-C (collective under data parallelism)."""
        local = self.signalled
        if self.accelerator.num_processes > 1:
            flag = torch.tensor([float(local)], device=self.accelerator.device)
            local = bool(self.accelerator.reduce(flag, reduction="max").item())
        return local

    def observe_step(self, seconds: float) -> None:
        self.max_step = max(self.max_step, seconds)

    def should_stop(self, epoch_ends: bool) -> bool:
        local = self.signalled
        if self.deadline is not None:
            margin = 2 * self.max_step + self.save_seconds + (self.epoch_end_seconds if epoch_ends else 0.0)
            local = local or time.monotonic() + margin >= self.deadline
        if self.accelerator.num_processes > 1:
            flag = torch.tensor([float(local)], device=self.accelerator.device)
            local = bool(self.accelerator.reduce(flag, reduction="max").item())
        return local

    def elapsed(self) -> float:
        return time.monotonic() - self.start
