"""What the fault checks of issue 13 cost: the per-step non-finite check and data.verify_images.

    python bench/fault_checks.py [--images N]

1. The fused per-step check (``NonFiniteGuard.finite``: stack the loss terms and the gradient norm,
   one ``isfinite().all()``, one ``.item()``), timed alone and as a share of a tiny_cnn training step
   on this machine's device (CPU here; on a GPU the ``.item()`` also waits for the step's kernels).
2. ``data.verify_images`` on the CIFAR-10 JPEG folder from ../shared/data (extracted to bench/out).
"""

from __future__ import annotations

import argparse
import tarfile
import time

import torch
from common import CIFAR_TARBALL, OUT, print_header

from tcl_lite.config import ModelConfig
from tcl_lite.engine.nonfinite import NonFiniteGuard
from tcl_lite.models.network import build_model


class _Acc:  # what NonFiniteGuard reads of an Accelerator, for one process on this device
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    num_processes = 1
    scaler = None


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def step_check_cost(steps: int = 200) -> None:
    dev = _Acc.device
    model = build_model(ModelConfig(width=32), 10, in_channels=3, image_size=32).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(64, 3, 32, 32, device=dev), torch.randint(0, 10, (64,), device=dev)
    guard = NonFiniteGuard("stop", _Acc())

    def run(check: bool) -> float:
        _sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(model(x).logits, y)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            if check:
                guard.finite({"loss": loss.detach(), "acc": loss.detach()}, norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
        _sync()
        return (time.perf_counter() - t0) / steps

    run(False)  # warm-up
    without, with_check = run(False), run(True)
    logs = {"loss": torch.tensor(1.0, device=dev), "acc": torch.tensor(0.5, device=dev)}
    norm = torch.tensor(2.0, device=dev)
    t0 = time.perf_counter()
    for _ in range(2000):
        guard.finite(logs, norm)
    alone = (time.perf_counter() - t0) / 2000
    print(f"device {dev}: tiny_cnn width 32, batch 64 at 32 px, clipping on")
    print(f"  step without the check {without * 1e3:.2f} ms, with it {with_check * 1e3:.2f} ms "
          f"({(with_check / without - 1) * 100:+.1f}%, noise included)")
    print(f"  the check alone: {alone * 1e6:.1f} us per step")


def verify_cost(limit: int) -> None:
    from tcl_lite.data.datasets import scan_image_folder
    from tcl_lite.data.verify import verify_images

    if not CIFAR_TARBALL.exists():
        print(f"(skipped: {CIFAR_TARBALL} is absent)")
        return
    root = OUT / "cifar10-jpeg"
    if not root.is_dir():
        OUT.mkdir(parents=True, exist_ok=True)
        with tarfile.open(CIFAR_TARBALL) as tar:
            tar.extractall(OUT, filter="data")
    splits, _ = scan_image_folder(str(root))
    paths = (splits["train"][0] + splits["test"][0])[:limit]
    t0 = time.perf_counter()
    verify_images(paths, str(root))
    s = time.perf_counter() - t0
    print(f"data.verify_images on {len(paths)} CIFAR-10 JPEGs: {s:.1f} s ({s / len(paths) * 1e3:.2f} ms per image)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=60000, help="how many CIFAR-10 JPEGs to verify")
    args = p.parse_args()
    print_header("fault checks (issue 13)")
    step_check_cost()
    verify_cost(args.images)


if __name__ == "__main__":
    main()
