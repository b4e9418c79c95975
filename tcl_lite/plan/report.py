"""A plan as a console table and as JSON (``tcl-lite plan [--json]``)."""

from __future__ import annotations

from typing import Any

from tcl_lite.plan.fit import Verdict
from tcl_lite.plan.gpus import ALLOCATOR_MARGIN, CUDA_CONTEXT_BYTES, CUDNN_WORKSPACE_BYTES, GIB, MIB
from tcl_lite.plan.planner import Plan
from tcl_lite.plan.runs import EVERY_EPOCH, PassTrace, StepTrace
from tcl_lite.plan.trace import CATEGORIES

COLUMNS = ("weights", "gradients", "optimizer state", "activations", "gradient cache", "temporaries")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size or (unit == "min" and seconds >= size):
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _mib(n: float) -> str:
    return f"{n / MIB:,.0f}" if n >= MIB or n == 0 else f"{n / MIB:.1f}"


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def _summary(plan: Plan) -> str:
    cfg, m, s = plan.cfg, plan.meta, plan.run.settings
    sizes = (f"{m.train:,} train" + (f", {m.val:,} val" if m.val else "") + (f", {m.test:,} test" if m.test else "")
             if m.sizes_known else "sizes unknown")
    micro = "auto" if plan.auto else f"{s.micro_batches} micro-batch{'es' if s.micro_batches > 1 else ''}"
    return (f"tcl-lite plan{' ' + plan.name if plan.name else ''}: method {cfg.method}, {m.name} ({sizes}; "
            f"{m.num_classes} classes; {m.channels}x{m.image_size}x{m.image_size}), {cfg.model.arch}, batch "
            f"{cfg.train.batch_size} in {micro}, precision {s.precision}, activation checkpointing "
            f"{'on' if s.checkpointing else 'off'}, optimizer {s.optimizer}, {cfg.train.epochs} epochs")


def _memory_rows(plan: Plan) -> list[list[Any]]:
    rows = []
    for item in [*plan.run.steps, *plan.run.passes]:
        t = item.trace
        if isinstance(item, StepTrace):
            what = f"{item.kind} ({item.epochs} epochs): {item.phase} step"
            per_epoch = f"{item.steps:,} steps" if plan.meta.sizes_known else "-"
        else:
            what = f"{item.label}" if item.kind == EVERY_EPOCH else f"{item.kind}: {item.label}"
            per_epoch = f"{item.per_epoch:.2g} x {item.samples:,} samples" if plan.meta.sizes_known else "-"
        rest = t.peak["batch"] + t.peak["method state"]
        rows.append([what, per_epoch, *(_mib(t.peak[c]) for c in COLUMNS), _mib(rest), _mib(t.peak_bytes),
                     f"{t.flops / 1e9:,.1f}"])
    return rows


def _flops_line(plan: Plan) -> str:
    if not plan.meta.sizes_known:
        return f"FLOPs per epoch and per run: unknown ({plan.meta.note})"
    parts = []
    for kind in plan.run.kinds():
        f = plan.run.epoch_flops(kind)
        parts.append(f"{kind} {sum(f.values()) / 1e15:.3g} PFLOP (training {f['training'] / 1e15:.3g}, passes "
                     f"{f['passes'] / 1e15:.3g}, evaluation {f['evaluation'] / 1e15:.3g})")
    return "FLOPs per epoch: " + "; ".join(parts) + f". Run: {plan.run.run_flops() / 1e15:,.4g} PFLOP"


def _gpu_row(v: Verdict, plan: Plan) -> list[Any]:
    g, s = v.gpu, v.settings
    if not v.runs:
        needs = f"{v.device_bytes / GIB:.2f} GiB" if v.run and not v.run.problems else "-"
        return [g.name, f"{g.memory_gib:.2f} GiB", needs, "no", "cannot run: " + v.reason, "-", "-", "-"]
    if v.fits_as_is:
        change = "auto: 1 micro-batch" if plan.auto else "-"
    else:
        label = f"auto: {s.micro_batches} micro-batches" if plan.auto and v.change == "more micro-batches" else v.change
        change = f"{label or 'precision'}: {' '.join(v.overrides)}"
    fraction, name = (g.fraction_fp32, "fp32") if s.precision == "no" else (g.fraction_half, s.precision)
    rate = f"{g.achieved_tflops(s.precision):.3g} TFLOPS ({fraction:.0%} of {g.tflops(s.precision):g} {name})"
    timed = plan.meta.sizes_known and g.achieved_tflops(s.precision) > 0
    per_epoch = " / ".join(duration(x) for x in v.epoch_seconds().values()) if timed else "-"
    run = duration(v.run_seconds()) if timed else "-"
    rate = rate if g.achieved_tflops(s.precision) > 0 else "unknown GPU: no time estimate"
    return [g.name, f"{g.memory_gib:.2f} GiB", f"{v.device_bytes / GIB:.2f} GiB",
            "yes" if v.fits_as_is else "with change", change, per_epoch, run, rate]


def plan_text(plan: Plan) -> str:
    """The console report: memory per traced step and pass, FLOPs, and one row per GPU."""
    kinds = " / ".join(plan.run.kinds())
    out = [_summary(plan),
           "PREDICTED: every step and pass below was traced under fake tensors on the CPU (no data read, nothing "
           "computed); memory in MiB at each one's peak, GFLOP per step or batch.", "",
           _table(["traced", "per epoch", *COLUMNS, "batch + method state", "peak", "GFLOP"], _memory_rows(plan)),
           "", _flops_line(plan), ""]
    if plan.run.problems:
        out += ["Cannot run anywhere: " + "; ".join(plan.run.problems), ""]
    if plan.verdicts:
        out += [f"Per GPU (ESTIMATES until bench/gpu_check.py measures them: CUDA context {CUDA_CONTEXT_BYTES // MIB} "
                f"MiB, allocator margin {ALLOCATOR_MARGIN:.0%} of the peak, cuDNN workspace "
                f"{CUDNN_WORKSPACE_BYTES // MIB} MiB; time = FLOPs at the stated share of the GPU's peak; epoch: "
                f"{kinds})", "",
                _table(["GPU", "memory", "needs", "fits", "change that fits", "epoch", "run", "rate assumed"],
                       [_gpu_row(v, plan) for v in plan.verdicts])]
        notes = sorted({f"{v.gpu.name}: {n}" for v in plan.verdicts for n in v.notes})
        out += ["", *(f"note: {n}" for n in notes)] if notes else []
    out += ["", f"planned in {plan.seconds:.1f} s"]
    return "\n".join(out)


def _trace_json(item: StepTrace | PassTrace) -> dict[str, Any]:
    t = item.trace
    common = {"label": t.label, "memory_bytes": {c: t.peak[c] for c in CATEGORIES}, "peak_bytes": t.peak_bytes,
              "resident_bytes": t.resident, "flops": t.flops}
    if isinstance(item, StepTrace):
        return {"what": "step", "kind": item.kind, "phase": item.phase, "steps_per_epoch": item.steps,
                "epochs": item.epochs, **common}
    return {"what": "pass", "kind": item.kind, "pass": item.label, "samples": item.samples,
            "per_epoch": item.per_epoch, "batch_samples": item.batch_samples, **common}


def _verdict_json(v: Verdict) -> dict[str, Any]:
    s = v.settings
    return {"gpu": v.gpu.key, "name": v.gpu.name, "memory_bytes": v.gpu.memory_bytes, "runs": v.runs,
            "fits_as_is": v.fits_as_is, "needs_bytes": v.device_bytes, "change": v.change, "overrides": v.overrides,
            "reason": v.reason, "notes": v.notes,
            "settings": {"micro_batches": s.micro_batches, "activation_checkpointing": s.checkpointing,
                         "mixed_precision": s.precision, "optimizer": s.optimizer},
            "epoch_seconds": v.epoch_seconds(), "run_seconds": v.run_seconds(),
            "assumed_tflops": v.gpu.achieved_tflops(s.precision), "estimate": True}


def plan_json(plan: Plan) -> dict[str, Any]:
    """Everything the table shows, in bytes, FLOPs and seconds."""
    m, run = plan.meta, plan.run
    return {
        "config": plan.name, "method": plan.cfg.method, "predicted": True, "auto_micro_batches": plan.auto,
        "dataset": {"name": m.name, "train": m.train, "val": m.val, "test": m.test, "classes": m.num_classes,
                    "channels": m.channels, "image_size": m.image_size, "sizes_known": m.sizes_known, "note": m.note},
        "settings": {"batch_size": plan.cfg.train.batch_size, "micro_batches": run.settings.micro_batches,
                     "activation_checkpointing": run.settings.checkpointing,
                     "mixed_precision": run.settings.precision, "optimizer": run.settings.optimizer,
                     "epochs": plan.cfg.train.epochs},
        "traced": [_trace_json(x) for x in [*run.steps, *run.passes]],
        "problems": run.problems,
        "flops": {"per_epoch": {k: run.epoch_flops(k) for k in run.kinds()}, "epochs": run.kinds(),
                  "run": run.run_flops() if m.sizes_known else None},
        "cuda_estimates": {"context_bytes": CUDA_CONTEXT_BYTES, "allocator_margin": ALLOCATOR_MARGIN,
                           "cudnn_workspace_bytes": CUDNN_WORKSPACE_BYTES},
        "gpus": [_verdict_json(v) for v in plan.verdicts],
        "seconds": plan.seconds,
    }
