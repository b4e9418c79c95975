"""Training-step throughput on the CPU by intra-op thread count, with the machine's load beside it: the
figures behind the trainer's thread choice (``tcl_lite/engine/placement.py``).

    python bench/cpu_threads.py                  # 1 and 2 threads (up to the physical cores, at most 4)
    python bench/cpu_threads.py --seconds 10

Each count runs in its own process (``OMP_NUM_THREADS`` is read once, when torch loads): forward, backward
and an SGD step of a digits-sized tiny_cnn (8 px, batch 32) and of PreAct ResNet-18 (32 px, batch 64) on
random inputs, timed for ``--seconds`` after one warm-up step. The load average is printed before and
after each measurement: on a machine whose cores are busy, a thread count above the idle cores makes every
operation wait for a descheduled thread.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from common import ROOT, markdown_table, print_header

CASES = (("tiny_cnn", 8, 32, 8), ("preact_resnet18", 32, 64, 0))


def child(arch: str, size: int, batch: int, width: int, seconds: float) -> None:
    import time

    import torch

    from tcl_lite import register_builtins
    from tcl_lite.config import ModelConfig
    from tcl_lite.models.network import build_model

    register_builtins()
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, **({"width": width} if width else {})), 10, image_size=size)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(x).logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    t0, n = time.perf_counter(), 0
    while n == 0 or time.perf_counter() - t0 < seconds:
        step()
        n += 1
    print(f"{batch * n / (time.perf_counter() - t0):.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--threads", default="", help="comma-separated counts (default: 1 up to min(cores, 4))")
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        arch, size, batch, width = args.child
        return child(arch, int(size), int(batch), int(width), args.seconds)
    cores = os.cpu_count() or 1
    counts = [int(t) for t in args.threads.split(",")] if args.threads else list(range(1, min(cores, 4) + 1))
    print_header("CPU training-step throughput by intra-op threads (bench/cpu_threads.py)")
    rows = []
    for arch, size, batch, width in CASES:
        for n in counts:
            before = os.getloadavg()[0]
            env = dict(os.environ, OMP_NUM_THREADS=str(n), PYTHONPATH=str(ROOT))
            out = subprocess.run([sys.executable, __file__, "--seconds", str(args.seconds), "--child", arch,
                                  str(size), str(batch), str(width)], env=env, capture_output=True, text=True)
            rate = out.stdout.strip().splitlines()[-1] if out.returncode == 0 else f"failed: {out.stderr[-200:]}"
            rows.append([f"{arch} {size} px, batch {batch}", n, rate, f"{before:.1f} -> {os.getloadavg()[0]:.1f}"])
            print(" | ".join(map(str, rows[-1])), flush=True)
    print(markdown_table(["step", "threads", "images/s", "load average (before -> after)"], rows))


if __name__ == "__main__":
    main()
