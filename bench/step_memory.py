"""Peak memory and time of ONE TCL optimizer step at effective batch B, per memory-saving configuration.

    python bench/step_memory.py --quick          # B=32, micro-batch 8, tiny_cnn 16 px: ~1 min on 2 cores
    python bench/step_memory.py                  # B=256 (1,536 encoder images), micro 32, PreAct ResNet-18 32 px
    python bench/step_memory.py --method mlnt    # the same table for MLNT (its own naive = no accumulation)

Each configuration runs in a fresh subprocess (no allocator state carried over):

* ``naive``      one forward/backward over the whole batch (gradient_accumulation_steps = 1);
* ``exact``      B/m micro-batches of m through TCL's gradient cache (``tcl.gradient_mode=exact``);
* ``+ckpt``      the same with per-stage activation checkpointing;
* ``+8bit``      the same with bitsandbytes' SGD8bit (smaller optimizer state: it shows in the baseline
                 column, not in the peak above it);
* ``+bf16``      the same in bf16 autocast;
* ``+fp16``      (GPU only, ``--configs ...,+fp16``) ``+8bit`` in fp16 autocast with Accelerate's loss scaler.

Memory: peak above the pre-step baseline -- on the CPU the process peak RSS (VmHWM reset with
clear_refs after malloc_trim, as ``bench/mlnt_memory.py``), on a GPU ``torch.cuda.max_memory_allocated``.
The baseline holds the model, the optimizer state (one warm-up step has run) and the gradient buffers
(zeroed, not freed, so every configuration's peak counts activations and temporaries only). The step
is forward + backward + ``optimizer.step``. Time: median of ``--steps`` measured steps.

Agreement: the warm-up step starts from the same weights, inputs, mixup lambda and permutation in every
configuration, so its loss and gradient norm are compared with naive's. The model uses
``model.norm=group`` by default: with BatchNorm each micro-batch normalises by its own statistics, so
accumulation would not reproduce the single-batch gradient even in exact mode (``--norm batch`` shows
that difference).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from common import OUT, ROOT, markdown_table, print_header, reset_cpu_peak, status_kib

CONFIGS = ("naive", "exact", "+ckpt", "+8bit", "+bf16")
# fp16 needs CUDA: not in the default list; ``+fp16`` is ``+8bit`` in fp16 autocast (an alternative to +bf16).
GPU_CONFIGS = ("+fp16",)


def _settings(name: str) -> dict[str, Any]:
    """Cumulative settings: each configuration adds one saving to the one before it."""
    if name in GPU_CONFIGS:
        return {**_settings("+bf16"), "precision": name.removeprefix("+")}
    order = CONFIGS.index(name)
    return {"accumulate": order >= 1, "checkpointing": order >= 2, "optim": "sgd8bit" if order >= 3 else "sgd",
            "precision": "bf16" if order >= 4 else "no"}


def step_overrides(args: argparse.Namespace, config: str) -> list[str]:
    """The config overrides of one configuration (``args``: this script's options)."""
    import torch

    s = _settings(config)
    cuda = torch.cuda.is_available()
    micro_batches = args.batch // args.micro if s["accumulate"] else 1
    return [
        f"method={args.method}", f"model.arch={args.arch}", f"model.norm={args.norm}", "model.dropout=0",
        f"model.width={args.width}", f"data.image_size={args.image_size}", f"optim.name={s['optim']}",
        f"train.batch_size={args.batch}", f"train.gradient_accumulation_steps={micro_batches}",
        f"train.activation_checkpointing={str(s['checkpointing']).lower()}",
        f'train.mixed_precision="{s["precision"]}"', f"train.cpu={str(not cuda).lower()}", "tcl.gradient_mode=exact"]


def build_step(cfg: Any, num_classes: int) -> SimpleNamespace:
    """Model, optimizer, method and one fixed synthetic batch as ``cfg`` says, on Accelerate's device.

    Returns ``acc, model, optimizer, method, micro_batches`` and ``step()`` (forward + backward of the
    whole batch, no optimizer step). A fresh Accelerator each time: in-process callers
    (``gpu_check.py``, tests) build several with different precisions.
    """
    import numpy as np
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    from tcl_lite.engine.optim import build_optimizer
    from tcl_lite.methods import get_method
    from tcl_lite.methods.base import StepInfo, TrainContext
    from tcl_lite.models.network import build_model

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    acc = Accelerator(cpu=cfg.train.cpu, mixed_precision=cfg.train.mixed_precision)
    batch_size, micro_batches, size = cfg.train.batch_size, cfg.train.gradient_accumulation_steps, cfg.data.image_size
    torch.manual_seed(0)
    method_cls = get_method(cfg.method)
    model = build_model(cfg.model, num_classes, in_channels=3, image_size=size,
                        with_projector=method_cls.needs_projector,
                        activation_checkpointing=cfg.train.activation_checkpointing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bitsandbytes on CPU may warn about its build
        optimizer = build_optimizer(cfg.optim, model, 1e-3)
    model, optimizer = acc.prepare(model, optimizer)
    n_train = max(batch_size, 1024)
    data = SimpleNamespace(num_classes=num_classes, channels=3, image_size=size,
                           noisy_labels=np.zeros(n_train, dtype=np.int64), true_labels=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLNT without a feature checkpoint: the student's initial weights
        method = method_cls(TrainContext(cfg, acc, model, optimizer, data, OUT / "step_memory"))

    g = torch.Generator().manual_seed(1)
    views = len(method_cls.views)
    images = [torch.randn(batch_size, 3, size, size, generator=g).to(acc.device) for _ in range(views)]
    batch = {"image": images if views > 1 else images[0],
             "label": torch.randint(0, num_classes, (batch_size,), generator=g).to(acc.device),
             "index": torch.arange(batch_size, device=acc.device)}
    # A step of the second epoch: past MLNT's start_iter (its meta loss, the part worth measuring, is
    # on) and inside TCL's target warm-up (same graph as after it; only the targets differ).
    info = StepInfo(1, 0, 0, 10**6)

    def step() -> dict[str, Any]:
        torch.manual_seed(2)  # the same mixup lambda and permutation (and MLNT synthetic labels) everywhere
        return method.training_step(batch, info)  # split into train.gradient_accumulation_steps by the method

    return SimpleNamespace(acc=acc, model=model, optimizer=optimizer, method=method, micro_batches=micro_batches,
                           step=step)


def measure_step(cfg: Any, *, steps: int, num_classes: int, label: str) -> dict[str, Any]:
    """Peak memory above the pre-step baseline and median time of ``steps`` optimizer steps of ``cfg``."""
    import torch

    rig = build_step(cfg, num_classes)
    model, optimizer, step = rig.model, rig.optimizer, rig.step
    cuda = rig.acc.device.type == "cuda"
    # Warm-up step from the initial weights: its loss and gradient norm are the agreement check; it
    # also allocates the optimizer state, so the baseline below holds it.
    logs = step()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    grad_norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(x.float()) for x in grads])))
    if rig.acc.scaler is not None:  # fp16: the gradients carry the loss scale
        grad_norm /= float(rig.acc.scaler.get_scale())
    loss = float(logs["loss"])
    optimizer.step()
    for _ in range(8):  # fp16: a step skipped for an overflow allocates no state; repeat at the lowered scale
        if not getattr(optimizer, "step_was_skipped", False):
            break
        optimizer.zero_grad(set_to_none=False)
        step()
        optimizer.step()
    optimizer.zero_grad(set_to_none=False)
    states = [t for st in optimizer.state.values() for t in st.values() if torch.is_tensor(t)]
    state_bytes = sum(t.numel() * t.element_size() for t in states)

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = reset_cpu_peak()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() if cuda else status_kib("VmHWM") * 1024) - base
    out = {"config": label, "micro_batches": rig.micro_batches, "peak_mib": peak / 2**20, "base_mib": base / 2**20,
           "optim_state_mib": state_bytes / 2**20, "seconds": statistics.median(times), "loss": loss,
           "grad_norm": grad_norm, "device": f"cuda:{torch.cuda.get_device_name()}" if cuda else "cpu (peak RSS)",
           "batch": cfg.train.batch_size, "optimizer": type(getattr(optimizer, "optimizer", optimizer)).__name__,
           "state_dtypes": sorted({str(t.dtype).removeprefix("torch.") for t in states})}
    if cuda:  # what a whole GPU must hold: the allocator's reserve at the peak and the CUDA context
        free, total = torch.cuda.mem_get_info()
        out |= {"reserved_peak_mib": torch.cuda.max_memory_reserved() / 2**20,
                "context_mib": (total - free - torch.cuda.memory_reserved()) / 2**20,
                "device_total_mib": total / 2**20}
    return out


def child(args: argparse.Namespace) -> dict[str, Any]:
    from tcl_lite.config import load_config

    cfg = load_config(None, step_overrides(args, args.config))
    return measure_step(cfg, steps=args.steps, num_classes=args.num_classes, label=args.config)


def _run(args: argparse.Namespace, config: str) -> dict[str, Any]:
    passed = [f"--method={args.method}", f"--arch={args.arch}", f"--width={args.width}", f"--norm={args.norm}",
              f"--image-size={args.image_size}", f"--batch={args.batch}", f"--micro={args.micro}",
              f"--steps={args.steps}", f"--num-classes={args.num_classes}", f"--config={config}"]
    proc = subprocess.run([sys.executable, __file__, *passed, "--child"], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        return {"config": config, "error": (proc.stderr.strip().splitlines() or ["killed (out of memory?)"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="B=32, micro 8, tiny_cnn width 16 at 16 px, 3 steps")
    p.add_argument("--method", default="tcl", choices=("tcl", "mlnt", "ce"))
    p.add_argument("--arch", default="preact_resnet18")
    p.add_argument("--width", type=int, default=64, help="model.width (tiny_cnn only)")
    p.add_argument("--norm", default="group", choices=("group", "batch"),
                   help="group: exact configurations reproduce naive's gradient; batch: per-micro-batch statistics")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch", type=int, default=256, help="effective batch B (TCL's encoder sees 6B images)")
    p.add_argument("--micro", type=int, default=32, help="micro-batch size m (B/m micro-batches)")
    p.add_argument("--steps", type=int, default=2, help="measured steps per configuration (median time)")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"subset of {','.join(CONFIGS + GPU_CONFIGS)}")
    p.add_argument("--json", type=Path, help="also write the results here (default bench/out/step_memory_*.json)")
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    if args.quick:
        args.arch, args.width, args.image_size, args.batch, args.micro, args.steps = "tiny_cnn", 16, 16, 32, 8, 3
    configs = args.configs.split(",")
    print_header(f"step_memory: one {args.method.upper()} step, B={args.batch}, micro-batch {args.micro}, "
                 f"{args.arch} {args.image_size}px, norm={args.norm}" + (" (QUICK)" if args.quick else ""))
    results = []
    for config in configs:
        r = _run(args, config)
        results.append(r)
        print(f"  {config}: " + (r["error"] if "error" in r else f"{r['peak_mib']:.1f} MiB, {r['seconds']:.2f} s"),
              file=sys.stderr, flush=True)
    naive = next((r for r in results if r["config"] == "naive" and "error" not in r), None)
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["config"], "failed: " + r["error"][:80], "", "", "", "", "", "", ""])
            continue
        mem_ratio = f"{r['peak_mib'] / naive['peak_mib']:.3f}" if naive and naive["peak_mib"] > 0 else "-"
        t_ratio = f"{r['seconds'] / naive['seconds']:.2f}" if naive else "-"
        d_loss = f"{abs(r['loss'] - naive['loss']):.1e}" if naive else "-"
        d_gn = f"{abs(r['grad_norm'] - naive['grad_norm']) / naive['grad_norm']:.1e}" if naive else "-"
        rows.append([r["config"], r["micro_batches"], f"{r['base_mib']:.0f} ({r['optim_state_mib']:.1f})",
                     f"{r['peak_mib']:.1f}", mem_ratio, f"{r['seconds']:.2f}", t_ratio,
                     f"{r['loss']:.6f} ({d_loss})", f"{r['grad_norm']:.6f} ({d_gn})"])
    device = (naive or results[0]).get("device", "?")
    print(f"device: {device}; configurations are cumulative (each adds one saving to the row above)\n")
    print(markdown_table(["config", "micro-batches", "baseline MiB (optim state)", "peak above baseline MiB",
                          "/ naive", "step s (median)", "/ naive", "loss (abs diff)", "grad norm (rel diff)"], rows))
    out = args.json or OUT / f"step_memory_{args.method}_B{args.batch}_{args.arch}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
