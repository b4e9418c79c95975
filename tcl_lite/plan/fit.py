"""Whether a traced run fits a GPU, the smallest change that makes it fit, its time there, and the
micro-batch count ``train.gradient_accumulation_steps=auto`` resolves to.

Every candidate is traced, not extrapolated: a model of the peak in the micro-batch count (fixed part +
part / count, from two traces) only picks which count to trace next.

The changes, in order of their cost to the user (each level keeps the ones before it):

1. more micro-batches (the same objective for the methods with a gradient cache; one more forward per
   step for them; BatchNorm statistics per micro-batch);
2. activation checkpointing (exact; one more forward of each stage);
3. the 8-bit optimizer (bitsandbytes: a quantised optimizer state);
4. mixed precision (bf16, or fp16 where the GPU has no bf16): every activation rounded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from tcl_lite.errors import ConfigError
from tcl_lite.plan.gpus import ALLOCATOR_MARGIN, CUDA_CONTEXT_BYTES, CUDNN_WORKSPACE_BYTES, GPU
from tcl_lite.plan.runs import RunTrace, RunTracer, Settings
from tcl_lite.plan.trace import gib_text

MIN_MICRO_BATCH = 2  # samples per micro-batch: BatchNorm in train mode needs two
MAX_MICRO_BATCHES = 64  # beyond this a step is mostly overhead; the planner proposes other changes


def device_bytes(peak: int) -> int:
    """What a GPU must hold for a traced peak: the allocator's margin, cuDNN's workspace, the context."""
    return gpu_allocated(peak) + CUDA_CONTEXT_BYTES


def gpu_allocated(peak: int) -> int:
    """The traced peak as a GPU allocator holds it (margin and cuDNN workspace; no context)."""
    return int(peak * (1 + ALLOCATOR_MARGIN)) + CUDNN_WORKSPACE_BYTES


def micro_batch_counts(batch_size: int, start: int) -> list[int]:
    """Micro-batch counts from ``start`` on that divide the batch, at least ``MIN_MICRO_BATCH`` samples each."""
    return [n for n in range(max(1, start), min(batch_size // MIN_MICRO_BATCH, MAX_MICRO_BATCHES) + 1)
            if batch_size % n == 0] or ([1] if start <= 1 else [])


def smallest_fitting(tracer: RunTracer, settings: Settings, fits: Callable[[int], bool],
                     start: int) -> RunTrace | None:
    """The trace with the fewest micro-batches (from ``start``) whose peak (bytes) ``fits``, or None.

    Up from ``start`` until one fits (the next count tried: from the model peak = fixed + part / n
    fitted to the last two traces, or double), then a bisection down to the smallest that fits."""
    counts = micro_batch_counts(tracer.cfg.train.batch_size, start)
    tried: dict[int, RunTrace] = {}

    def ok(i: int) -> bool:
        n = counts[i]
        if n not in tried:
            tried[n] = tracer.run(dataclasses.replace(settings, micro_batches=n))
        return not tried[n].problems and fits(tried[n].peak.peak_bytes)

    if not counts:
        return None
    lo, hi = -1, 0
    while not ok(hi):
        nxt = _next_count(counts, tried, fits, hi) if hi < len(counts) - 1 else None
        if nxt is None:
            return None
        lo, hi = hi, nxt
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return tried[counts[hi]]


def _next_count(counts: list[int], tried: dict[int, RunTrace], fits: Callable[[int], bool], i: int) -> int | None:
    """The index to try after ``i`` (which did not fit): the first the peak model says fits, else double;
    None when more micro-batches did not lower the peak (what remains does not shrink with them)."""
    doubled = next((j for j, n in enumerate(counts) if n >= 2 * counts[i]), len(counts) - 1)
    known = sorted(tried)
    if len(known) < 2:
        return doubled
    n1, n2 = known[-2:]
    p1, p2 = tried[n1].peak.peak_bytes, tried[n2].peak.peak_bytes
    if p2 >= p1:
        return None
    part = (p1 - p2) / (1 / n1 - 1 / n2)
    fixed = p2 - part / n2
    return next((j for j in range(i + 1, len(counts)) if fits(int(fixed + part / counts[j]))), len(counts) - 1)


def gpu_fits(gpu: GPU) -> Callable[[int], bool]:
    return lambda peak: device_bytes(peak) <= gpu.memory_bytes


def levels(base: Settings, gpu: GPU | None) -> list[tuple[str, Settings]]:
    """The cumulative changes to try, cheapest first (see the module docstring)."""
    out, s = [("more micro-batches", base)], base
    if not s.checkpointing:
        s = dataclasses.replace(s, checkpointing=True)
        out.append(("activation checkpointing", s))
    if not s.optimizer.endswith("8bit"):
        s = dataclasses.replace(s, optimizer=s.optimizer + "8bit")
        out.append(("8-bit optimizer", s))
    half = gpu.half_precision if gpu is not None else "bf16"
    if s.precision == "no":
        s = dataclasses.replace(s, precision=half)
        out.append((f"{half} mixed precision", s))
    return out


@dataclass
class Verdict:
    """One GPU: the settings that run there (the config's, or the smallest change), the predicted memory
    and time, and why it cannot run when it cannot."""

    gpu: GPU
    settings: Settings
    run: RunTrace | None
    fits_as_is: bool
    change: str = ""  # which change made it fit ("" when none was needed)
    overrides: list[str] = field(default_factory=list)
    reason: str = ""  # why it cannot run at all
    notes: list[str] = field(default_factory=list)

    @property
    def runs(self) -> bool:
        return self.run is not None and not self.reason

    @property
    def device_bytes(self) -> int:
        return device_bytes(self.run.peak.peak_bytes) if self.run is not None else 0

    def epoch_seconds(self) -> dict[str, float]:
        """Estimated seconds per epoch of each kind (FLOPs at the GPU's stated sustained rate)."""
        rate = self.gpu.achieved_tflops(self.settings.precision) * 1e12
        if self.run is None or rate <= 0:
            return {}
        return {kind: sum(self.run.epoch_flops(kind).values()) / rate for kind in self.run.kinds()}

    def run_seconds(self) -> float | None:
        rate = self.gpu.achieved_tflops(self.settings.precision) * 1e12
        return self.run.run_flops() / rate if self.run is not None and rate > 0 else None


def verdict(tracer: RunTracer, gpu: GPU) -> Verdict:
    """Whether the config runs on ``gpu`` as it is, else the first level of changes that fits, with the
    fewest micro-batches."""
    base, notes = tracer.base, [gpu.note] if gpu.note else []
    if base.precision == "bf16" and not gpu.bf16:
        notes.append(f"{gpu.key} has no {base.precision}: {gpu.half_precision} instead")
        base = dataclasses.replace(base, precision=gpu.half_precision)
    first = tracer.run(base)
    if first.problems:
        return Verdict(gpu, base, first, False, reason="; ".join(first.problems), notes=notes)
    fits = gpu_fits(gpu)
    if fits(first.peak.peak_bytes):
        return Verdict(gpu, base, first, base == tracer.base, overrides=base.overrides(tracer.base), notes=notes)
    for i, (change, settings) in enumerate(levels(base, gpu)):
        found = smallest_fitting(tracer, settings, fits, settings.micro_batches + (i == 0))
        if found is not None:
            overrides = found.settings.overrides(tracer.base)
            return Verdict(gpu, found.settings, found, False, change, overrides, notes=notes)
    smallest = tracer.run(dataclasses.replace(levels(base, gpu)[-1][1], micro_batches=max(
        micro_batch_counts(tracer.cfg.train.batch_size, 1))))
    return Verdict(gpu, smallest.settings, smallest, False, reason=_too_large(smallest, gpu), notes=notes)


def _too_large(run: RunTrace, gpu: GPU) -> str:
    peak = run.peak
    largest = max(peak.peak, key=peak.peak.get)
    return (f"does not fit even with every change ({run.settings.micro_batches} micro-batches, activation "
            f"checkpointing, 8-bit optimizer, {run.settings.precision}): {gib_text(device_bytes(peak.peak_bytes))} "
            f"needed of {gib_text(gpu.memory_bytes)}, at {peak.label!r}, mostly {largest} "
            f"({gib_text(peak.peak[largest])}); lower train.batch_size or use a smaller model / image size")


def choose_micro_batches(tracer: RunTracer, budget: int, device_type: str) -> RunTrace:
    """``train.gradient_accumulation_steps=auto``: the trace with the fewest micro-batches dividing the
    batch whose peak fits ``budget`` bytes (on a GPU with its allocator margin and cuDNN workspace; the
    CUDA context is outside the budget). Raises ConfigError when none does."""
    def need(peak: int) -> int:
        return gpu_allocated(peak) if device_type == "cuda" else peak

    first = tracer.run()
    if first.problems:
        raise ConfigError("; ".join(first.problems))
    found = smallest_fitting(tracer, tracer.base, lambda peak: need(peak) <= budget, 1)
    if found is None:
        last = tracer.run(dataclasses.replace(tracer.base, micro_batches=max(
            micro_batch_counts(tracer.cfg.train.batch_size, 1))))
        raise ConfigError(
            "config key 'train.gradient_accumulation_steps': auto finds no micro-batch count whose predicted "
            f"peak fits train.memory_budget ({gib_text(budget)}): with {last.settings.micro_batches} micro-batches "
            f"the step needs {gib_text(need(last.peak.peak_bytes))}. Set train.activation_checkpointing=true, "
            "train.mixed_precision, a smaller train.batch_size, or a larger train.memory_budget")
    return found
