"""The sections of ``bench/gpu_check.py``: each fills in its rows from ``gpu_probes``' measurements.

A row's status: ``pass`` / ``fail`` for a claim with a criterion (stated in its notes), ``measured`` for
a figure, ``not run`` (no CUDA, no data) or ``not available`` (e.g. no DivideMix in the registry yet).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from common import ROOT

SECTIONS = ("exactness", "optim8bit", "memory", "fit", "throughput", "loader", "resume", "plan")
# The shipped CIFAR presets whose traced steps differ (the noise-rate variants trace as their base).
CALIBRATION_PRESETS = ("cifar10_ce", "cifar10_tcl", "cifar10_tcl_1gpu_exact", "cifar10_dividemix", "cifar100_tcl",
                       "cifar100_dividemix")
MEMORY_CONFIGS = ("naive", "exact", "+ckpt", "+8bit", "+bf16", "+fp16")
THROUGHPUT_METHODS = ("tcl", "dividemix", "mlnt", "ce")
PAYLOAD = ROOT / "bench" / "gpu_payload"  # git-ignored: the CIFAR tarball and wheels carried to a GPU machine
CHECK_SCRIPT = Path(__file__).with_name("gpu_check.py")
NOT_RUN, NOT_AVAILABLE, PASS, FAIL, MEASURED = "not run", "not available", "pass", "fail", "measured"
BNB_FIX = ("bitsandbytes is not importable: pip install --no-index --no-deps bench/gpu_payload/wheels/"
           "bitsandbytes-*.whl (see bench/README.md)")


@dataclass
class Row:
    section: str
    check: str
    setting: str
    status: str = NOT_RUN
    figures: str = ""
    notes: str = ""


def _failed(row: Row, result: dict[str, Any]) -> bool:
    """A child that reported an error marks ``row`` failed with it."""
    if "error" in result:
        row.status, row.notes = FAIL, result["error"]
    return "error" in result


def run_child(kind: str, spec: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
    """``gpu_check.py --child-KIND SPEC`` in a fresh process; its JSON, or ``{"error": ...}``."""
    try:
        proc = subprocess.run([sys.executable, str(CHECK_SCRIPT), f"--child-{kind}", json.dumps(spec)],
                              capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["killed (out of memory?)"])[-1][:300]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def notebook_device_settings(found: tuple[str, float, float], preset: str = "cifar10_tcl") -> tuple[str, list[str]]:
    """What the notebook trains ``preset`` with on the GPU ``found`` = (name, GiB, compute capability): the
    plan's settings for it (``tcl_lite.plan.planner.gpu_settings``, which the notebook calls too)."""
    from tcl_lite.plan.planner import gpu_settings

    plan, overrides = gpu_settings(preset, [], *found)
    return plan.verdicts[0].gpu.name, overrides


def autocast_precision(device: dict[str, Any] | None) -> str:
    """What the notebook picks: bf16 from compute capability 8 (A100, L4, H100), fp16 before (T4); CPU: none.
    ``device``: ``gpu_check.child_device``'s answer (the parent process never initialises CUDA itself)."""
    if device is None:
        return "no"
    return "bf16" if device["capability"][0] >= 8 else "fp16"


def bf16_unsupported(device: dict[str, Any] | None) -> str:
    """Why bf16 autocast is not measured here ('' when it is): before compute capability 8 (T4) it is emulated."""
    if device is not None and device["capability"][0] < 8:
        return "no native bf16 on this GPU (compute capability < 8, e.g. a T4: the notebook uses fp16 there)"
    return ""


def _guard(row: Row, fn: Callable[[], None]) -> None:
    """A check that raises is a failed row, not a crashed kit."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - reported in the row
        row.status, row.notes = FAIL, f"{type(e).__name__}: {e}"[:400]
        traceback.print_exc()


def run_section(section: str, rows: list[Row], ctx: SimpleNamespace) -> None:
    runner = {"exactness": _exactness, "optim8bit": _optim8bit, "memory": _memory, "fit": _fit,
              "throughput": _throughput, "loader": _loader, "resume": _resume, "plan": _plan}[section]
    for row in rows:
        t0 = time.perf_counter()
        _guard(row, lambda r=row: runner(r, ctx))
        print(f"  {row.check} ({row.setting}): {row.status} [{time.perf_counter() - t0:.0f} s]", file=sys.stderr,
              flush=True)


# -- the sections ------------------------------------------------------------------------------------------

def _exactness(row: Row, ctx: SimpleNamespace) -> None:
    from gpu_probes import exactness_ok

    precision, s = row.check.rsplit(", ", 1)[1], ctx.sizes
    if precision == "fp16" and not ctx.cuda:
        row.notes = "fp16 autocast and its GradScaler need CUDA"
        return
    if precision == "bf16" and bf16_unsupported(ctx.device):
        row.notes = bf16_unsupported(ctx.device)
        return
    r = run_child("exactness", {"precision": precision, "arch": s.arch, "image_size": s.image_size, "batch": s.batch,
                                "micro": s.micro, "width": s.width, "cpu": not ctx.cuda})
    if _failed(row, r):
        return
    row.status = PASS if exactness_ok(r) else FAIL
    row.figures = (f"{r['micro_batches']} micro-batches vs 1: loss rel diff {r['loss_rel']:.1e}, gradient rel diff "
                   f"{r['grad_rel']:.1e}; the precision's own rounding (single batch vs fp32): loss "
                   f"{r['rounding_loss_rel']:.1e}, gradient {r['rounding_grad_rel']:.1e}"
                   + (f"; loss scale {r['loss_scale']:g}" if precision == "fp16" else ""))
    row.notes = ("criterion: finite, gradient diff <= 2x rounding + 1e-3, loss diff <= 2x rounding + 1e-4"
                 + ("" if r["finite"] else "; NON-FINITE gradient"))


def _optim8bit(row: Row, ctx: SimpleNamespace) -> None:
    from gpu_probes import optimizer_8bit_ok

    r = run_child("optim8bit", {"name": row.check.split()[-1], "device": "cuda" if ctx.cuda else "cpu"})
    if _failed(row, r):
        return
    row.status = PASS if optimizer_8bit_ok(r) else FAIL
    row.figures = (f"{r['optimizer']} on {r['device']}; large-tensor state {'/'.join(r['state_dtypes'])}; loss "
                   f"{r['loss_first']:.3f} -> {r['loss_last']:.3f} (32-bit: {r['loss_last_32bit']:.3f}); state "
                   f"{r['state_mib']:.3f} MiB vs {r['state_mib_32bit']:.3f} MiB 32-bit "
                   f"({r['state_mib'] / r['state_mib_32bit']:.2f}x)")
    row.notes = BNB_FIX if not r["is_bitsandbytes"] else (
        "criterion: bitsandbytes class, uint8 state, loss halves, state < 0.35x of 32-bit")


def _memory(row: Row, ctx: SimpleNamespace) -> None:
    from step_memory import step_overrides

    s, config = ctx.sizes, row.check.split()[-1]
    if config == "+fp16" and not ctx.cuda:
        row.notes = "fp16 autocast needs CUDA"
        return
    if config == "+bf16" and bf16_unsupported(ctx.device):
        row.notes = bf16_unsupported(ctx.device)
        return
    shape = SimpleNamespace(method="tcl", arch=s.arch, norm="group", width=s.width, image_size=s.image_size,
                            batch=s.batch, micro=s.micro)
    spec = {"overrides": [*step_overrides(shape, config), f"train.cpu={str(not ctx.cuda).lower()}"],
            "steps": s.steps, "label": config}
    r = run_child("step", spec)
    ctx.results.setdefault("memory", {})[config] = r
    if _failed(row, r):
        return
    naive = ctx.results["memory"].get("naive", {})
    rel = (f" = {r['peak_mib'] / naive['peak_mib']:.3f} of naive, {r['seconds'] / naive['seconds']:.2f}x its time"
           if naive.get("peak_mib") else "")
    row.status = MEASURED
    row.figures = (f"peak {r['peak_mib']:.0f} MiB above a {r['base_mib']:.0f} MiB baseline (optimizer state "
                   f"{r['optim_state_mib']:.1f} MiB); step {r['seconds']:.3f} s{rel}; loss {r['loss']:.6f}, "
                   f"grad norm {r['grad_norm']:.6f}")
    row.notes = r["device"]
    if config in ("+8bit", "+bf16", "+fp16") and "8bit" not in r["optimizer"]:
        row.status, row.notes = FAIL, f"optimizer is {r['optimizer']}, not 8-bit: {BNB_FIX}"


TOY_MODEL = ["model.arch=tiny_cnn", "model.width=16", "data.image_size=16"]


def _fit(row: Row, ctx: SimpleNamespace) -> None:
    from gpu_probes import detection_bank_mib, fit_verdict

    from tcl_lite import load_config  # registers the built-ins first

    if not ctx.cuda:
        row.notes = "needs CUDA memory figures (allocator reserve, CUDA context)"
        return
    budget = ctx.args.budget_gib * 1024
    if row.setting.startswith("notebook"):
        found = ("Tesla T4", 15.0, 7.5)
        if row.check == "fits this GPU":  # the notebook's table row for this very GPU, against all its memory
            dev = ctx.device
            found, budget = (dev["name"], dev["total_gib"], dev["capability"][0] + dev["capability"][1] / 10), None
        label, overrides = notebook_device_settings(found)
        config_file = ROOT / "configs" / "cifar10_tcl.yaml"
        row.setting = f"notebook settings for {label} on configs/cifar10_tcl.yaml: {' '.join(overrides)}"
    else:
        config_file, overrides = ROOT / row.setting, []
    overrides = [*overrides, "train.cpu=false", *(TOY_MODEL + ["train.batch_size=64"] if ctx.args.toy else [])]
    cfg = load_config(config_file, overrides)
    r = run_child("step", {"config_file": str(config_file), "overrides": overrides, "steps": 1, "label": row.setting})
    if _failed(row, r):
        return
    extras = detection_bank_mib(50_000, cfg.model.proj_dim, 10)
    v = fit_verdict(peak_allocated_mib=r["base_mib"] + r["peak_mib"], reserved_peak_mib=r["reserved_peak_mib"],
                    context_mib=r["context_mib"], extras_mib=extras, budget_mib=budget or r["device_total_mib"])
    row.status = PASS if v["fits"] else FAIL
    row.figures = (f"needs {v['required_mib']:.0f} of {v['budget_mib']:.0f} MiB: CUDA context (and anything else on "
                   f"the GPU) {r['context_mib']:.0f} "
                   f"+ allocator reserve at the peak {r['reserved_peak_mib']:.0f} (allocated peak "
                   f"{r['base_mib'] + r['peak_mib']:.0f}) + detection bank {extras:.0f}; headroom "
                   f"{v['headroom_mib']:.0f} MiB: {v['verdict']}; B={cfg.train.batch_size} in "
                   f"{cfg.train.gradient_accumulation_steps} micro-batch(es), step {r['seconds']:.2f} s")
    row.notes = (f"measured on {r['device']}; a T4's cuDNN workspaces and context differ somewhat "
                 "(criterion: required <= budget)")


def _throughput(row: Row, ctx: SimpleNamespace) -> None:
    from tcl_lite.methods import METHODS

    method, s = row.check.split()[0].lower(), ctx.sizes
    if method not in METHODS:
        row.status, row.notes = NOT_AVAILABLE, f"no method named {method!r} in tcl_lite.methods yet"
        return
    batch, precision = s.mlnt_batch if method == "mlnt" else s.batch, autocast_precision(ctx.device)
    overrides = [f"method={method}", f"model.arch={s.arch}", f"model.width={s.width}", "model.norm=batch",
                 f"data.image_size={s.image_size}", f"train.batch_size={batch}", "train.gradient_accumulation_steps=1",
                 f'train.mixed_precision="{precision}"', f"train.cpu={str(not ctx.cuda).lower()}", "optim.name=sgd"]
    r = run_child("step", {"overrides": overrides, "steps": s.steps, "label": method})
    if _failed(row, r):
        return
    rate = batch / r["seconds"]
    ctx.results[f"{method}_samples_per_s"] = rate
    row.status = MEASURED
    row.figures = f"{rate:.0f} samples/s ({r['seconds'] * 1000:.0f} ms per step, {precision} autocast)"
    row.notes = "; ".join(filter(None, [{"tcl": "the encoder sees 6 images per sample", "mlnt": "10 synthetic "
                                         "sets, second order; the reference's batch of 32"}.get(method), r["device"]]))


def _loader(row: Row, ctx: SimpleNamespace) -> None:
    from gpu_probes import starvation_verdict

    s = ctx.sizes
    in_memory, on_device = "decoded in memory" in row.setting, "batched" in row.check
    if ctx.args.toy:
        data = ["data.dataset=digits", f"data.image_size={s.image_size}"]
        row.setting = "digits (in memory), --toy"
    elif ctx.data_root is None:
        row.notes = "no CIFAR-10 data: pass --data PATH (the JPEG tarball or its folder)"
        return
    else:
        data = ["data.dataset=imagefolder", f"data.root={ctx.data_root}", f"data.image_size={s.image_size}",
                f"data.train_subset={s.batch * (s.loader_batches + 2)}"]
    data += [f"data.cache_decoded={'on' if in_memory else 'off'}",
             f"data.augment_on={'device' if on_device else 'workers'}"]
    spec = {"data_overrides": data, "augment_on": "device" if on_device else "workers", "batch": s.batch,
            "batches": s.loader_batches, "workers": 2, "cores": 2}
    r = run_child("loader", spec)
    if _failed(row, r):
        return
    row.status = MEASURED
    row.figures = (f"{r['samples_per_s']:.0f} samples/s ({r['views']} views of {'x'.join(map(str, r['image_shape']))}"
                   f", {r['workers']} workers, process pinned to {r['cores']} cores)")
    step = ctx.results.get("tcl_samples_per_s")
    if step:
        v = starvation_verdict(r["samples_per_s"], step, in_memory=in_memory, on_device=on_device)
        row.figures += (f"; TCL step {step:.0f} samples/s: " + (f"STARVES the GPU (busy <= {v['gpu_busy_bound']:.0%})"
                                                                 if v["starved"] else "keeps up"))
        row.notes = v["fix"] + " (compared with this GPU's TCL step: a slower GPU, e.g. a T4, needs fewer samples/s)"
    else:
        row.notes = "no TCL step rate measured (run the throughput section too) to compare with"


def _resume(row: Row, ctx: SimpleNamespace) -> None:
    from gpu_probes import kill_and_resume, resume_ok

    if ctx.args.toy:  # CE on the digits: 39 steps per epoch
        args, epochs, kill_at = ["data.image_size=8", "model.width=8", "train.batch_size=32", "train.epochs=3",
                                 "checkpoint.every_steps=5", "train.log_every=1000"], 3, 44
        row.setting = "digits CE, tiny_cnn 8px (--toy)"
    elif not ctx.cuda:
        row.notes = "a CIFAR run on the CPU is too slow here: --toy runs the same check on the digits"
        return
    elif ctx.data_root is None:
        row.notes = "no CIFAR-10 data: pass --data PATH (the JPEG tarball or its folder)"
        return
    else:  # 5000 / 256 = 19 steps per epoch; killed at the checkpoint of step 25, mid-epoch 2
        precision = autocast_precision(ctx.device)
        args = ["--config", "configs/cifar10_tcl_sym50.yaml", "data.dataset=imagefolder",
                f"data.root={ctx.data_root}", "data.train_subset=5000", "data.test_subset=1000", "train.epochs=3",
                "tcl.warmup_epochs=1", "optim.warmup_epochs=1", f"train.mixed_precision={precision}",
                "checkpoint.every_steps=5", "data.num_workers=2", "train.log_every=5"]
        epochs, kill_at = 3, 24
    run_dir = ctx.out / "gpu_check_runs" / f"resume_{time.strftime('%Y%m%d_%H%M%S')}"
    r = kill_and_resume(args, run_dir, kill_at_step=kill_at, timeout=480)
    row.status = PASS if resume_ok(r, epochs) else FAIL
    last = r["last"]
    row.figures = (f"SIGKILL after the checkpoint of step {r['killed_at_step']} (epochs done before: "
                   f"{r['epochs_before_kill']}); second session: {r['resumed_line'] or 'NO resume line'}; epochs "
                   f"{r['epochs']}, last test_acc {last.get('test_acc', float('nan')):.3f}")
    row.notes = (f"run: {run_dir}" + (f"; {r['stderr_tail'][-300:]}" if r["stderr_tail"] else "")
                 + "; criterion: killed, resumed at that global step, every epoch once to the end, exit 0")


def _plan(row: Row, ctx: SimpleNamespace) -> None:
    """``tcl-lite plan``'s prediction of one step of a shipped preset (its post-warm-up step, as
    ``step_memory.py`` builds it, with the preset's own settings) against this device: the peak above
    the baseline (GPU: ``torch.cuda.max_memory_allocated``; CPU: the profiler's allocations) and the
    step time, which calibrates the planner's time constant (``tcl_lite/plan/gpus.py``)."""
    from step_memory import predicted_step

    from tcl_lite import load_config  # registers the built-ins first
    from tcl_lite.plan.dataset_meta import dataset_meta
    from tcl_lite.plan.gpus import gpu_for

    preset = row.setting.split()[0]
    overrides = [f"train.cpu={str(not ctx.cuda).lower()}", *(TOY_MODEL + ["train.batch_size=64"] if ctx.args.toy
                                                             else [])]
    cfg = load_config(preset, overrides)
    if cfg.train.mixed_precision == "fp16" and not ctx.cuda:
        row.notes = "fp16 autocast needs CUDA"
        return
    classes = dataset_meta(cfg).num_classes
    r = run_child("step", {"config_file": preset, "overrides": overrides, "steps": ctx.sizes.steps, "label": preset,
                           "num_classes": classes})
    if _failed(row, r):
        return
    p = predicted_step(cfg, classes, cpu_workspace=not ctx.cuda)
    tflops = p["predicted_gflop"] / r["seconds"] / 1e3
    ctx.results.setdefault("plan", {})[preset] = {**r, **p, "achieved_tflops": tflops}
    row.status = MEASURED
    ratio = r["allocated_mib"] / p["predicted_mib"]
    row.figures = (f"{p['predicted_step']}: peak above baseline measured {r['allocated_mib']:.0f} MiB, predicted "
                   f"{p['predicted_mib']:.0f} MiB (measured / predicted {ratio:.3f}); step {r['seconds']:.3f} s for "
                   f"{p['predicted_gflop']:.0f} GFLOP = {tflops:.2f} TFLOPS")
    row.notes = r["device"]
    if ctx.cuda:
        dev = ctx.device
        gpu = gpu_for(dev["name"], dev["total_gib"], dev["capability"][0] + dev["capability"][1] / 10)
        precision = cfg.train.mixed_precision
        assumed = gpu.achieved_tflops(precision)
        if assumed > 0:
            row.figures += (f" = {tflops / gpu.tflops(precision):.1%} of the {gpu.name}'s {gpu.tflops(precision):g} "
                            f"({precision}); tcl_lite/plan/gpus.py assumes {assumed:.3g} TFLOPS: measured / assumed "
                            f"{tflops / assumed:.2f} (the calibration)")
