"""Time per epoch and the time left, measured on the epochs this process has run.

Printed at the end of every epoch from the first one on, so that a long default (200 CIFAR epochs)
says how long it will take before the user has waited for it. An epoch resumed in its middle counts
as the fraction of the epoch it ran.
"""

from __future__ import annotations

import time


def duration_text(seconds: float) -> str:
    """``42s``, ``7m05s``, ``3h12m``, ``2d04h``: short and unambiguous."""
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


class EpochClock:
    """``start()`` before the loop; ``epoch_done(fraction_run)`` after each epoch -> seconds per epoch, left."""

    def __init__(self, total_epochs: int) -> None:
        self.total_epochs = total_epochs
        self._t0 = time.monotonic()
        self._epochs_run = 0.0
        self.per_epoch, self.left = 0.0, 0.0

    def start(self) -> None:
        self._t0, self._epochs_run = time.monotonic(), 0.0

    def epoch_done(self, epochs_finished: int, fraction_run: float = 1.0) -> tuple[float, float]:
        """``epochs_finished``: epochs complete so far (including earlier sessions); ``fraction_run``: the
        share of the just-finished epoch that this process ran (below 1 for an epoch resumed midway)."""
        self._epochs_run += max(1e-9, fraction_run)
        self.per_epoch = (time.monotonic() - self._t0) / self._epochs_run
        self.left = self.per_epoch * max(0, self.total_epochs - epochs_finished)
        return self.per_epoch, self.left

    def text(self, epochs_finished: int, fraction_run: float = 1.0) -> str:
        per_epoch, left = self.epoch_done(epochs_finished, fraction_run)
        if epochs_finished >= self.total_epochs:
            return f"{duration_text(per_epoch)}/epoch, done"
        finish = time.strftime("%H:%M", time.localtime(time.time() + left))
        n = self.total_epochs - epochs_finished
        return (f"{duration_text(per_epoch)}/epoch, ETA {duration_text(left)} "
                f"({n} epoch{'s' * (n > 1)} left, ends ~{finish})")
