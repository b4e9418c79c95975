"""A config's plan: its run traced as configured, and a verdict per GPU (fits / the smallest change that
fits / cannot run, with the estimated time per epoch and per run). ``tcl-lite plan`` prints it; the
engine resolves ``train.gradient_accumulation_steps=auto`` through ``resolve_micro_batches``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from tcl_lite.config import Config, load_config
from tcl_lite.errors import ConfigError
from tcl_lite.plan.dataset_meta import DatasetMeta, dataset_meta
from tcl_lite.plan.fit import Verdict, choose_micro_batches, verdict
from tcl_lite.plan.gpus import CUDA_CONTEXT_BYTES, GPU, GPUS, gpu_for
from tcl_lite.plan.runs import RunTrace, RunTracer


@dataclass
class Plan:
    name: str  # what --config named (a preset, a file) or ""
    cfg: Config
    meta: DatasetMeta
    run: RunTrace  # the config as it is
    verdicts: list[Verdict] = field(default_factory=list)
    seconds: float = 0.0  # how long planning took
    auto: bool = False  # train.gradient_accumulation_steps=auto: the counts below are what it resolves to


def make_plan(cfg: Config, gpus: list[GPU] | None = None, *, name: str = "",
              samples: tuple[int, int] | None = None) -> Plan:
    """Trace ``cfg``'s run and decide, for each of ``gpus`` (default: all known), whether it fits."""
    t0 = time.perf_counter()
    meta = dataset_meta(cfg, samples)
    tracer = RunTracer(cfg, meta)
    run = tracer.run()
    verdicts = [verdict(tracer, gpu) for gpu in (gpus if gpus is not None else list(GPUS.values()))]
    auto = cfg.train.gradient_accumulation_steps == "auto"
    return Plan(name, cfg, meta, run, verdicts, time.perf_counter() - t0, auto)


def resolve_micro_batches(cfg: Config, budget: int, device_type: str, log: Any = print) -> int:
    """``train.gradient_accumulation_steps=auto``: the fewest micro-batches (dividing the batch) whose
    traced peak fits ``budget`` bytes on ``device_type`` ("cuda" or "cpu"); logged with the prediction."""
    t0 = time.perf_counter()
    tracer = RunTracer(cfg, cpu_workspace=device_type == "cpu")
    run = choose_micro_batches(tracer, budget, device_type)
    n, peak = run.settings.micro_batches, run.peak
    log(f"train.gradient_accumulation_steps=auto: {n} micro-batch{'es' if n > 1 else ''} of "
        f"{cfg.train.batch_size // n} samples; predicted peak {peak.peak_bytes / 2**30:.2f} GiB at {peak.label!r} "
        f"(train.memory_budget {budget / 2**30:.2f} GiB; planned in {time.perf_counter() - t0:.1f} s)")
    return n


def default_budget(device_type: str, total_bytes: int, available_bytes: int) -> int:
    """``train.memory_budget`` when empty: a GPU's memory less the CUDA context, or the available RAM."""
    return total_bytes - CUDA_CONTEXT_BYTES if device_type == "cuda" else available_bytes


def gpu_settings(preset: str, overrides: list[str], name: str, memory_gib: float,
                 capability: float = 0.0) -> tuple[Plan, list[str]]:
    """What a run of ``preset`` trains with on the GPU ``name`` (as nvidia-smi names it): the GPU's mixed
    precision (bf16 where it has it, else fp16: the faster and smaller one), then the plan's smallest
    change that fits. Returns the plan of those settings and their overrides (the notebook's settings)."""
    gpu = gpu_for(name, memory_gib, capability)
    cfg = load_config(preset, [*overrides, f"train.mixed_precision={gpu.half_precision}"])
    plan = make_plan(cfg, [gpu], name=preset)
    v = plan.verdicts[0]
    if not v.runs:
        raise ConfigError(f"{preset} cannot run on this {gpu.name}: {v.reason}")
    s = v.settings
    return plan, [f"train.mixed_precision={s.precision}", f"train.gradient_accumulation_steps={s.micro_batches}",
                  f"train.activation_checkpointing={str(s.checkpointing).lower()}", f"optim.name={s.optimizer}"]
