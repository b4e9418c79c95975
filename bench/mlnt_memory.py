"""Peak memory of ONE MLNT step: immediate per-set backward (tcl_lite) vs the reference's all-at-once.

    python bench/mlnt_memory.py                                  # preact_resnet18, 32 px, batch 32, 10 sets
    python bench/mlnt_memory.py --arch resnet50 --image-size 64 --precision bf16 --checkpointing

The default takes ~1 min on 2 idle CPU cores (several times that when they are shared); the ResNet-50 line
~1 min.

Each configuration runs in a fresh subprocess (no allocator state carried over). The number is the
peak above the pre-step baseline (model, optimizer and gradients already allocated): on the CPU the
process's peak RSS (VmHWM, reset just before the step, after malloc_trim), on a GPU
``torch.cuda.max_memory_allocated``. ``ce`` is a plain CE forward/backward, for scale.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

    from tcl_lite.methods.mlnt.method import MLNT

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable as a script from anywhere
MODES = ("ce", "immediate", "all_at_once")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_cpu_peak() -> int:
    """Release freed heap to the OS, reset the peak RSS; returns the current RSS in bytes."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: the baseline may then include some freed memory
        pass
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS") * 1024


def all_at_once(method: MLNT, x: Tensor, y: Tensor, alpha: float) -> None:
    """The reference's step: CE backward keeping the graph, the consistencies of all sets summed into
    one meta_loss and one backward (every set's second-order graph alive until then)."""
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call

    from tcl_lite.methods.mlnt.ema import ema_update_
    from tcl_lite.methods.mlnt.method import consistency_loss
    from tcl_lite.methods.mlnt.synthetic_labels import neighbour_relabel

    cfg, acc = method.mcfg, method.ctx.accelerator
    logits = method.ctx.model(x).logits.float()
    acc.backward(F.cross_entropy(logits, y), retain_graph=True)
    ema_update_(method.teacher.parameters(), method.student.parameters(), 0.0)
    with torch.no_grad(), acc.autocast():
        p_t = F.softmax(method.teacher(x).logits.float(), dim=1)
        feats = method.feature_net(x).features.float()
    total = 0.0
    for _ in range(cfg.num_synthetic):
        syn = neighbour_relabel(y, feats, cfg.perturb_ratio, cfg.num_neighbors).labels
        grads = torch.autograd.grad(F.cross_entropy(logits, syn), method.params,
                                    create_graph=not cfg.first_order, retain_graph=True)
        fast = {n: p - cfg.meta_lr * (g.detach() if cfg.first_order else g)
                for n, p, g in zip(method.names, method.params, grads, strict=True)}
        with acc.autocast():
            fast_logits = functional_call(method.student, fast, (x,)).logits
        total = total + consistency_loss(p_t, fast_logits)
    acc.backward(alpha * total / cfg.num_synthetic)


def child(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F
    from accelerate import Accelerator

    from tcl_lite import load_config  # registers the built-ins first
    from tcl_lite.methods.base import StepInfo, TrainContext
    from tcl_lite.methods.mlnt.method import MLNT
    from tcl_lite.models.network import build_model

    cuda = torch.cuda.is_available()
    cfg = load_config(None, [
        "method=mlnt", f"model.arch={args.arch}", f"data.image_size={args.image_size}",
        f"mlnt.num_synthetic={args.num_synthetic}", f"mlnt.first_order={str(args.first_order).lower()}",
        f"train.activation_checkpointing={str(args.checkpointing).lower()}",
        f'train.mixed_precision="{args.precision}"', f"train.cpu={str(not cuda).lower()}"])
    acc = Accelerator(cpu=not cuda, mixed_precision=args.precision)
    torch.manual_seed(0)
    model = build_model(cfg.model, args.num_classes, in_channels=3, image_size=args.image_size,
                        activation_checkpointing=args.checkpointing)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model, optimizer = acc.prepare(model, optimizer)
    data = SimpleNamespace(num_classes=args.num_classes, channels=3, image_size=args.image_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no feature checkpoint: the student's initial weights
        method = MLNT(TrainContext(cfg, acc, model, optimizer, data, ROOT / "bench" / "out"))
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, device=acc.device)
    y = torch.randint(0, args.num_classes, (args.batch,), device=acc.device)

    # Warm-up: kernels, gradients (kept allocated: they are part of the baseline in every mode).
    acc.backward(F.cross_entropy(model(x).logits.float(), y))
    optimizer.zero_grad(set_to_none=False)

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _reset_cpu_peak()
    t0 = time.perf_counter()
    if args.mode == "ce":
        acc.backward(F.cross_entropy(model(x).logits.float(), y))
    elif args.mode == "immediate":
        method.training_step([{"image": x, "label": y}], StepInfo(1, 0, 10**6, 1))
    else:
        all_at_once(method, x, y, cfg.mlnt.alpha)
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _status_kib("VmHWM") * 1024 - base
    return {"mode": args.mode, "peak_mib": peak / 2**20, "seconds": time.perf_counter() - t0,
            "device": "cuda:" + torch.cuda.get_device_name() if cuda else "cpu (peak RSS)"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="preact_resnet18")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--num-synthetic", type=int, default=10)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--first-order", action="store_true")
    p.add_argument("--checkpointing", action="store_true", help="train.activation_checkpointing")
    p.add_argument("--precision", default="no", choices=("no", "bf16", "fp16"))
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--mode", help=argparse.SUPPRESS)  # internal: run one mode in this process
    args = p.parse_args()
    if args.mode:
        print(json.dumps(child(args)))
        return

    passed = [f"--arch={args.arch}", f"--image-size={args.image_size}", f"--batch={args.batch}",
              f"--num-synthetic={args.num_synthetic}", f"--num-classes={args.num_classes}",
              f"--precision={args.precision}", *(["--first-order"] if args.first_order else []),
              *(["--checkpointing"] if args.checkpointing else [])]
    results = {}
    for mode in args.modes.split(","):
        proc = subprocess.run([sys.executable, __file__, *passed, f"--mode={mode}"], capture_output=True,
                              text=True, cwd=ROOT)
        if proc.returncode != 0:
            sys.exit(f"{mode} failed:\n{proc.stderr[-3000:]}")
        results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"{args.arch} {args.image_size}px batch {args.batch}, {args.num_synthetic} synthetic sets, "
          f"{'first' if args.first_order else 'second'}-order, precision {args.precision}, activation "
          f"checkpointing {'on' if args.checkpointing else 'off'}; {next(iter(results.values()))['device']}")
    for mode, r in results.items():
        print(f"  {mode:12s} peak above baseline {r['peak_mib']:9.1f} MiB   {r['seconds']:6.2f} s")
    if "immediate" in results and "all_at_once" in results:
        ratio = results["all_at_once"]["peak_mib"] / results["immediate"]["peak_mib"]
        print(f"  all-at-once / immediate: {ratio:.2f}x")


if __name__ == "__main__":
    main()
