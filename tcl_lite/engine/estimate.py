"""The time per epoch and the peak memory a run should take on this device, printed before its first
epoch ("about N min/epoch, M GiB peak on this device") and by ``tcl-lite audit`` before it trains.

* On a GPU: the plan's prediction for this GPU (``tcl_lite.plan``: the run's steps traced under fake
  tensors; time = FLOPs at the GPU's assumed share of its peak rate, memory with the CUDA context and
  the allocator's margin). Labelled "predicted" until ``bench/gpu_check.py`` has measured that GPU.
* On the CPU: the plan's FLOPs per epoch at this CPU's rate, measured by timing a few forward and
  backward passes of the run's own network on a batch of its micro-batch size (at most
  ``CALIBRATION_BATCH``; a copy, under a forked RNG: the run is unchanged); data loading and
  augmentation are not counted. Labelled "estimate".

The trace costs seconds, so runs smaller than ``SMALL_RUN_SAMPLES`` (training samples x epochs) get no
estimate from the trainer: it would be a noticeable share of the run, whose time per epoch is printed
after its first epoch anyway.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tcl_lite.config import Config
from tcl_lite.models.network import build_model
from tcl_lite.plan.dataset_meta import dataset_meta
from tcl_lite.plan.fit import device_bytes
from tcl_lite.plan.gpus import GIB, gpu_for
from tcl_lite.plan.runs import RunTrace, RunTracer

SMALL_RUN_SAMPLES = 50_000  # training samples x epochs below which the trainer makes no estimate
CALIBRATION_BATCH = 64  # at most this many samples per timed step (the run's micro-batch when smaller): small
# batches run far below the rate of the run's (per-operation overhead), large ones cost seconds per step
CALIBRATION_SECONDS = 1.0  # timed steps stop after this long (at least one is timed)


@dataclass
class Estimate:
    epoch_seconds: float | None  # of the first epoch; None: no time estimate (a GPU the plan has no rate for)
    peak_bytes: int
    how: str  # what the figures come from
    later: dict[str, float] = field(default_factory=dict)  # seconds per epoch of the run's other kinds of epoch

    def text(self) -> str:
        later = "".join(f", {minutes_text(s, 'min/epoch')[6:]} in its {kind} epochs" for kind, s in self.later.items())
        return (f"{minutes_text(self.epoch_seconds)}{later}, {self.peak_bytes / GIB:.2f} GiB peak on this device "
                f"({self.how})")


def minutes_text(seconds: float | None, unit: str = "min/epoch") -> str:
    """``about 12 min/epoch``, ``about 0.35 min/epoch``, ``about 1,050 min/epoch (17.5 h)``."""
    if not seconds:
        return "time unknown"
    m = seconds / 60
    if m < 0.01:  # a tiny run: "about 1e-04 min" reads as a glitch
        return f"under 1 {unit}" if unit == "min" else f"under 0.01 {unit}"
    figure = f"{m:.2g}" if m < 1 else f"{m:.1f}" if m < 10 else f"{m:,.0f}"
    return f"about {figure} {unit}" + (f" ({m / 60:.1f} h)" if m >= 120 else "")


def _epoch_flops(run: RunTrace) -> list[tuple[str, float]]:
    """(kind, FLOPs of one epoch) in run order; the first is epoch 1's."""
    return [(kind, sum(run.epoch_flops(kind).values())) for kind in run.kinds()]


def _estimate(run: RunTrace, rate: float, peak: int, how: str) -> Estimate:
    """FLOPs at ``rate`` FLOP/s (0: no time); the later kinds only where their time differs from epoch 1's."""
    if rate <= 0:
        return Estimate(None, peak, how)
    (_, first), *rest = _epoch_flops(run)
    later = {kind: f / rate for kind, f in rest if abs(f - first) > 0.05 * first}
    return Estimate(first / rate, peak, how, later)


def cpu_flops_per_second(network: nn.Module, channels: int, image_size: int, batch: int) -> float:
    """FLOP/s of training steps (forward, backward) of a copy of ``network`` on a zero batch, on the CPU."""
    net = copy.deepcopy(network).cpu().train()
    x = torch.zeros(batch, channels, image_size, image_size)

    def step() -> None:
        out = net(x)
        logits = out.logits if hasattr(out, "logits") else out
        logits.float().sum().backward()

    with torch.random.fork_rng(devices=[]):
        with FlopCounterMode(display=False) as counter:
            step()  # also the warm-up (oneDNN picks its kernels on the first pass)
        flops, steps, t0 = counter.get_total_flops(), 0, time.perf_counter()
        while steps == 0 or time.perf_counter() - t0 < CALIBRATION_SECONDS:
            step()
            steps += 1
    return flops * steps / max(1e-9, time.perf_counter() - t0)


def estimate_run(cfg: Config, device: torch.device, network: nn.Module | None = None) -> Estimate:
    """The estimate of ``cfg``'s run on ``device``; ``network``: one of the run's networks (else built)."""
    meta = dataset_meta(cfg)
    on_gpu = device.type == "cuda"
    run = RunTracer(cfg, meta, cpu_workspace=not on_gpu).run()
    if on_gpu:
        props = torch.cuda.get_device_properties(device)
        gpu = gpu_for(props.name, props.total_memory / GIB, props.major + props.minor / 10)
        return _estimate(run, gpu.achieved_tflops(run.settings.precision) * 1e12, device_bytes(run.peak.peak_bytes),
                         f"predicted by tcl-lite plan for a {gpu.name}, not measured")
    if network is None:
        with torch.random.fork_rng(devices=[]):
            network = build_model(cfg.model, meta.num_classes, in_channels=meta.channels, image_size=meta.image_size)
    micro = cfg.train.gradient_accumulation_steps
    batch = max(2, min(CALIBRATION_BATCH, cfg.train.batch_size // (micro if isinstance(micro, int) else 1)))
    rate = cpu_flops_per_second(network, meta.channels, meta.image_size, batch)
    return _estimate(run, rate, run.peak.peak_bytes,
                     f"estimate: the plan's FLOPs at this CPU's measured {rate / 1e9:.3g} GFLOP/s, "
                     f"{torch.get_num_threads()} thread(s); data loading and augmentation not counted")


def announce_estimate(cfg: Config, accelerator: Any, network: nn.Module, train_samples: int, log: Any) -> None:
    """Log the estimate before the first epoch, for runs of at least ``SMALL_RUN_SAMPLES`` samples x epochs."""
    if not accelerator.is_main_process or train_samples * cfg.train.epochs < SMALL_RUN_SAMPLES:
        return
    log("expected: " + estimate_run(cfg, accelerator.device, accelerator.unwrap_model(network)).text())
