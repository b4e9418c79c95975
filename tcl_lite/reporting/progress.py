"""The live progress line: a rich bar in a terminal or notebook, plain lines in a log file."""

from __future__ import annotations

import time
from typing import Any

import psutil
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def memory_text(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB peak"
    return f"{psutil.Process().memory_info().rss / 2**30:.2f} GiB rss"


class TrainProgress:
    """Shows epoch, step, loss, lr, images/s and memory; silent on non-main processes."""

    def __init__(self, enabled: bool, total_epochs: int, steps_per_epoch: int, device: torch.device) -> None:
        self.enabled, self.total_epochs, self.steps_per_epoch, self.device = (
            enabled, total_epochs, steps_per_epoch, device)
        self.console = Console()
        self.live = enabled and (self.console.is_terminal or self.console.is_jupyter)
        self.progress: Progress | None = None
        self._images, self._t0 = 0, time.perf_counter()

    def start_epoch(self, epoch: int, completed: int) -> None:
        self._images, self._t0 = 0, time.perf_counter()
        if not self.live:
            return
        if self.progress is None:
            self.progress = Progress(TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(),
                                     MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                                     TimeRemainingColumn(), console=self.console)
            self.progress.start()
            self.task = self.progress.add_task("train", total=self.steps_per_epoch, epoch="", info="")
        self.progress.update(self.task, completed=completed, epoch=f"{epoch + 1}/{self.total_epochs}", info="")

    def step(self, images: int, logs: dict[str, float] | None, lr: float, step: int) -> None:
        self._images += images
        if not self.enabled or logs is None:
            if self.live:
                self.progress.update(self.task, advance=1)
            return
        rate = self._images / max(1e-9, time.perf_counter() - self._t0)
        info = (" ".join(f"{k} {v:.4f}" for k, v in logs.items())
                + f" | lr {lr:.4g} | {rate:.0f} img/s | {memory_text(self.device)}")
        if self.live:
            self.progress.update(self.task, advance=1, info=info)
        else:
            self.console.print(f"step {step}: {info}", highlight=False)

    def print(self, *args: Any) -> None:
        if self.enabled:
            (self.progress.console if self.progress else self.console).print(*args, highlight=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
