"""TCL's per-epoch detection (pass over the training set + GMM) as a fraction of a training epoch,
and the GMM fit time against N.

    python bench/epoch_overhead.py --quick       # digits only, GMM up to 1e6: ~1 min on 2 cores
    python bench/epoch_overhead.py               # + PreAct ResNet-18 on a 1,024-image CIFAR-10 JPEG subset, GMM to 1e6

In-process, with the trainer's pieces (build_data, build_model, build_optimizer, TCL, a shuffled
DataLoader with its workers): one training epoch (loading + ``training_step`` + optimizer step) is
timed, then ``detection_pass`` (one eval forward over the training set, centres, posteriors and the
GMM) and, separately, the kNN monitor that ``TCL.detect`` also runs each epoch (a monitor, not needed
by the method). The ratio does not depend much on N: a training epoch is 6 encoder forwards + backwards
per sample, the detection pass one forward.

GMM: ``gmm_clean_probability`` (2-component ``GaussianMixture``, ``random_state=0``, fit + posterior,
as TCL runs it) on synthetic bimodal scores in [0, 1].
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from common import OUT, cifar_root, markdown_table, print_header


def epoch_vs_detection(overrides: list[str], repeats: int = 1) -> dict[str, Any]:
    import torch
    from accelerate import Accelerator

    from tcl_lite import load_config  # registers the built-ins first
    from tcl_lite.algorithms.gmm_detector import detection_pass
    from tcl_lite.engine.optim import build_optimizer, peak_lr
    from tcl_lite.methods.base import StepInfo, TrainContext
    from tcl_lite.methods.tcl.method import TCL
    from tcl_lite.models.network import build_model

    cfg = load_config(None, ["method=tcl", "train.cpu=true", *overrides])
    acc = Accelerator(cpu=True)
    torch.manual_seed(cfg.seed)
    from tcl_lite.data import build_data

    data = build_data(cfg.data, cfg.seed)
    model = build_model(cfg.model, data.num_classes, in_channels=data.channels, image_size=data.image_size,
                        with_projector=True, activation_checkpointing=cfg.train.activation_checkpointing)
    optimizer = build_optimizer(cfg.optim, model, peak_lr(cfg.optim, cfg.train.batch_size))
    train_set = data.train_views(TCL.views)
    loader = torch.utils.data.DataLoader(train_set, batch_size=cfg.train.batch_size, shuffle=True, drop_last=True,
                                         num_workers=cfg.data.num_workers)
    model, optimizer, loader = acc.prepare(model, optimizer, loader)
    method = TCL(TrainContext(cfg, acc, model, optimizer, data, OUT / "epoch_overhead"))

    def train_epoch(epoch: int) -> float:
        train_set.set_epoch(epoch)
        model.train()
        t0 = time.perf_counter()
        for i, batch in enumerate(loader):
            method.training_step(batch, StepInfo(epoch, i, i, len(loader)))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    def detection() -> tuple[float, float]:
        t0 = time.perf_counter()
        detection_pass(acc, model, method.ctx.loader(data.train_eval()), method.noisy, data.num_classes,
                       temperature=cfg.tcl.posterior_temperature, sigma=cfg.tcl.sigma, per_class=cfg.tcl.gmm_per_class)
        t1 = time.perf_counter()
        method.detect()  # detection pass + the kNN monitor: the whole per-epoch hook
        return t1 - t0, time.perf_counter() - t1

    train_epoch(0)  # warm-up epoch: worker start-up, kernel selection
    detection()
    epochs, passes, hooks = [], [], []
    for r in range(repeats):
        epochs.append(train_epoch(r + 1))
        d, h = detection()
        passes.append(d)
        hooks.append(h)
    return {"n": len(train_set), "steps": len(loader), "epoch_s": statistics.median(epochs),
            "detect_s": statistics.median(passes), "hook_s": statistics.median(hooks)}


def gmm_time(n: int, repeats: int) -> float:
    import numpy as np

    from tcl_lite.algorithms.gmm_detector import gmm_clean_probability, minmax

    rng = np.random.default_rng(0)
    k = int(n * 0.6)  # 60% clean (low scores), 40% noisy (high), as at 40% noise
    scores = minmax(np.concatenate([rng.beta(2, 8, k), rng.beta(8, 2, n - k)]))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        gmm_clean_probability(scores)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="digits only (no CIFAR-10 row)")
    p.add_argument("--cifar-subset", type=int, default=1024, help="training images of the CIFAR-10 JPEG subset")
    p.add_argument("--repeats", type=int, default=1, help="measured epochs (median) after one warm-up epoch")
    p.add_argument("--gmm-sizes", default="", help="comma-separated N (default 1e4,1e5,1e6)")
    args = p.parse_args()
    print_header("epoch_overhead: detection pass + GMM vs one TCL training epoch" + (" (QUICK)" if args.quick else ""))

    setups = [("digits, tiny_cnn 16px, batch 32 (configs/digits_tcl.yaml)",
               ["data.dataset=digits", "data.image_size=16", "data.noise_rate=0.5", "data.num_workers=2",
                "model.arch=tiny_cnn", "model.width=16", "model.head=mlp", "train.batch_size=32",
                "train.eval_batch_size=512"])]
    if not args.quick:
        setups.append((f"CIFAR-10 JPEG {args.cifar_subset} imgs, PreAct ResNet-18 32px, batch 64",
                       ["data.dataset=imagefolder", f"data.root={cifar_root()}", "data.image_size=32",
                        f"data.train_subset={args.cifar_subset}", "data.test_subset=500", "data.num_workers=2",
                        "model.arch=preact_resnet18", "model.head=mlp", "train.batch_size=64",
                        "train.eval_batch_size=256"]))
    rows = []
    for name, overrides in setups:
        r = epoch_vs_detection(overrides, args.repeats)
        rows.append([name, r["n"], f"{r['epoch_s']:.2f}", f"{r['detect_s']:.2f}",
                     f"{100 * r['detect_s'] / r['epoch_s']:.1f}%", f"{r['hook_s']:.2f}",
                     f"{100 * r['hook_s'] / r['epoch_s']:.1f}%"])
    print(markdown_table(["setup", "train N", "train epoch s", "detection pass + GMM s", "/ epoch",
                          "whole after_epoch hook (+kNN monitor) s", "/ epoch"], rows))

    sizes = [int(float(s)) for s in args.gmm_sizes.split(",")] if args.gmm_sizes else (
        [10_000, 100_000, 1_000_000])
    print()
    print(markdown_table(["N scores", "2-component GMM fit + posterior s (median of 3)"],
                         [[f"{n:,}", f"{gmm_time(n, 3):.3f}"] for n in sizes]))


if __name__ == "__main__":
    main()
