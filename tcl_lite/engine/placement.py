"""Where a run computes, decided once before the data is built and stated in the run's first log line:
the CPU's intra-op threads (set when the user has not chosen them) and where the training views are made
(``data.augment_on=auto`` resolved).

Threads: torch's default is one per core, which on a machine whose cores are busy with other work makes
every operation wait for a descheduled thread (BENCHMARKS.md, "CPU threads"). Unless ``OMP_NUM_THREADS``
(or ``MKL_NUM_THREADS``) is set or the caller has called ``torch.set_num_threads``, a CPU run takes
``min(physical cores, MAX_THREADS)`` shared among the processes, and no more than the cores the load
average leaves idle (at least one). The thread count can change the last bits of a result: set
``OMP_NUM_THREADS`` for runs that must repeat bit for bit across machines or loads.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import torch

from tcl_lite.config import Config
from tcl_lite.data.build import resolve_augment_on
from tcl_lite.methods import get_method

MAX_THREADS = 4  # beyond this the small convolutions of 32 px images gain little per thread
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
_chosen: list[int] = []  # the count this module set last: a later run in the same process is not "the caller's"


def thread_count(env: dict[str, str], current: int, default: int, cores: int, load: float,
                 processes: int) -> tuple[int | None, str]:
    """(threads to set or None to keep ``current``, why). ``default``: torch's own count (one per usable
    CPU); ``load``: the 1-minute load average, which counts this process's own start-up as about one."""
    for name in THREAD_VARIABLES:
        if env.get(name):
            return None, f"{name}={env[name]}"
    if current != default and current not in _chosen:
        return None, "set by the caller (torch.set_num_threads)"
    share = max(1, min(cores, MAX_THREADS) // max(1, processes))
    idle = max(1, cores - round(max(0.0, load - 1.0)))
    n = min(share, idle)
    per = f" / {processes} processes" if processes > 1 else ""
    busy = f", {idle} idle at load {load:.1f}" if idle < share else ""
    return n, f"min({cores} physical cores, {MAX_THREADS}){per}{busy}; OMP_NUM_THREADS=N chooses"


def set_cpu_threads(device: torch.device, processes: int) -> str:
    """On the CPU, set torch's intra-op threads unless the user chose them; returns why the count is what it is."""
    if device.type != "cpu":
        return "torch's default"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n, why = thread_count(dict(os.environ), torch.get_num_threads(), usable,
                          psutil.cpu_count(logical=False) or usable, os.getloadavg()[0], processes)
    if n is not None:
        torch.set_num_threads(n)
        _chosen[:] = [n]
    return why


def _recorded_augment_on(checkpoint: Path | None) -> str:
    """``data.augment_on`` as a checkpoint's run recorded it ("" when none)."""
    if checkpoint is None:
        return ""
    try:
        value = json.loads((Path(checkpoint) / "trainer.json").read_text()).get("settings", {}).get("data.augment_on")
    except (OSError, ValueError, AttributeError):
        return ""
    return value if value in ("auto", "device", "workers") else ""


def resolve_augment_placement(cfg: Config, device: torch.device, resume_from: Path | None) -> bool:
    """Replace ``auto`` in ``cfg.data.augment_on`` by where the views are made; True when it was auto.
    A resumed run keeps its placement: the one recorded, or for a run recorded as ``auto`` before auto
    followed the views, that rule's (device on a GPU, workers on the CPU), so it continues exactly."""
    if cfg.data.augment_on != "auto":
        return False
    recorded = _recorded_augment_on(resume_from)
    if recorded == "auto":
        cfg.data.augment_on = "workers" if device.type == "cpu" else "device"
    elif recorded:
        cfg.data.augment_on = recorded
    else:
        cfg.data.augment_on = resolve_augment_on("auto", device, tuple(get_method(cfg.method).views))
    return True


@dataclass
class Placement:
    device: torch.device
    processes: int
    threads_why: str
    workers: int
    augment_on: str
    auto: bool

    def text(self) -> str:
        """The run's first log line."""
        n = torch.get_num_threads()
        procs = f" x {self.processes} processes" if self.processes > 1 else ""
        where = (f"batched on the training device ({self.device.type})" if self.augment_on == "device" else
                 "per sample in the data-loader workers" if self.workers else "per sample in the main process")
        return (f"device {self.device}{procs}; {n} intra-op thread{'s' * (n != 1)} ({self.threads_why}); "
                f"{self.workers} data-loader worker{'s' * (self.workers != 1)} (data.num_workers); augmentation "
                f"{where} (data.augment_on={'auto: ' if self.auto else ''}{self.augment_on})")


def place(cfg: Config, accelerator: Any, resume_from: Path | None) -> Placement:
    """Threads and augmentation placement for this run (before the data is built)."""
    device = accelerator.device
    why = set_cpu_threads(device, accelerator.num_processes)
    auto = resolve_augment_placement(cfg, device, resume_from)
    return Placement(device, accelerator.num_processes, why, cfg.data.num_workers, cfg.data.augment_on, auto)
