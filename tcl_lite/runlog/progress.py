"""The live progress line: a rich bar in a terminal or notebook, plain unwrapped lines when redirected."""

from __future__ import annotations

import time
from typing import Any

import psutil
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tcl_lite.runlog.run_log import RunLog


def memory_text(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB peak"
    return f"{psutil.Process().memory_info().rss / 2**30:.2f} GiB rss"


class TrainProgress:
    """Shows epoch, step, loss, lr, images/s and memory; silent on non-main processes."""

    def __init__(self, enabled: bool, total_epochs: int, steps_per_epoch: int, device: torch.device,
                 run_log: RunLog | None = None) -> None:
        self.enabled, self.total_epochs, self.steps_per_epoch, self.device = (
            enabled, total_epochs, steps_per_epoch, device)
        self.console = Console()
        self.live = enabled and (self.console.is_terminal or self.console.is_jupyter)
        self.progress: Progress | None = None
        self.run_log = run_log if run_log is not None else RunLog(enabled)
        self._plain_echo = self.run_log.echo
        self._images, self._t0 = 0, time.perf_counter()
        self.images_per_second = 0.0

    def start_epoch(self, epoch: int, completed: int) -> None:
        self._images, self._t0 = 0, time.perf_counter()
        if not self.live:
            return
        if self.progress is None:
            self.progress = Progress(TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(),
                                     MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                                     TimeRemainingColumn(), console=self.console)
            self.progress.start()
            self.run_log.echo = lambda text: self.progress.console.print(text, highlight=False)
            self.task = self.progress.add_task("train", total=self.steps_per_epoch, epoch="", info="")
        self.progress.update(self.task, completed=completed, epoch=f"{epoch + 1}/{self.total_epochs}", info="")

    def step(self, images: int, logs: dict[str, float] | None, lr: float, step: int) -> None:
        self._images += images
        if not self.enabled or logs is None:
            if self.live:
                self.progress.update(self.task, advance=1)
            return
        rate = self.images_per_second = self._images / max(1e-9, time.perf_counter() - self._t0)
        info = (" ".join(f"{k} {v:.4f}" for k, v in logs.items())
                + f" | lr {lr:.4g} | {rate:.0f} img/s | {memory_text(self.device)}")
        if self.live:
            self.progress.update(self.task, advance=1, info=info)
            self.run_log.record(f"step {step}: {info}")  # the bar shows it; the log keeps it
        else:
            self.run_log(f"step {step}: {info}")  # a plain line, never wrapped (also in train.log)

    def print(self, *args: Any) -> None:
        """A line for the console and train.log (above the live bar when there is one)."""
        self.run_log(*args)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
            self.run_log.echo = self._plain_echo
