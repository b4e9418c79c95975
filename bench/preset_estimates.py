"""Expected time per epoch of every shipped preset: on this CPU MEASURED by a short run, on a T4 PREDICTED
by the plan. The README's preset table and BENCHMARKS.md paste its output.

    OMP_NUM_THREADS=1 python bench/preset_estimates.py                 # every preset, ~2 min each measured
    OMP_NUM_THREADS=1 python bench/preset_estimates.py --seconds 60 --presets digits_tcl,cifar10_tcl

CPU column: each distinct setting (presets that differ only in their noise share one measurement) trains in
its own process for ``--seconds`` under ``train.time_budget``, one intra-op thread, no data-loader
workers (``data.num_workers=0``: the main process decodes and augments); the time per
epoch is the time of its whole epochs (with their evaluation) when it completed any, else its steady
time per step (from train.log's step lines, the first step and its kernel warm-up left out) times the
steps of an epoch, with the method's passes and the evaluation added in the proportion of their FLOPs
in the plan. CIFAR presets train on random images of
CIFAR's shape (the datasets are not on this machine; a convolution's time does not depend on the pixels),
so the JPEG-folder preset's decoding is not counted; the digits presets on the digits. MLNT presets need
their CE run first, fp16 presets a GPU: neither is measured. The machine's load is printed with the table.

T4 columns: ``tcl-lite plan``'s prediction with the notebook's settings for a T4 (fp16, and the smallest
change that fits: ``tcl_lite.plan.planner.gpu_settings``): FLOPs at the T4's assumed sustained rate,
memory with the CUDA context; predictions until ``bench/gpu_check.py`` measures a T4.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from common import OUT, ROOT, markdown_table, print_header

# The settings that decide the time of a step and of epoch 1's passes (noise, the method's weights and
# thresholds, paths and the seed do not).
TIMING_KEYS = ("method", "data.dataset", "data.image_size", "data.train_subset", "data.test_subset",
               "data.val_fraction", "data.augment_on", "train.batch_size", "train.eval_batch_size",
               "train.gradient_accumulation_steps", "train.mixed_precision", "train.activation_checkpointing",
               "optim.name")
SUBSET = 2048  # training samples of a measured run on a large dataset (subset_overrides)
STOP = re.compile(r"Stopping after ([\d.]+) min \(time budget\) at epoch (\d+), step (\d+)/(\d+)")


def timing_key(preset: str) -> str:
    """The settings that decide the time of a step (noise, seed and paths do not)."""
    from tcl_lite.config import flat_settings, load_config

    flat = flat_settings(load_config(preset))
    return json.dumps({k: v for k, v in flat.items() if k in TIMING_KEYS or k.startswith("model.")},
                      sort_keys=True, default=str)


def synthetic_overrides(preset: str) -> list[str]:
    """A CIFAR preset on random images of its dataset's shape (registered in the child process)."""
    from tcl_lite.config import load_config

    data = load_config(preset).data
    return [] if data.dataset == "digits" else ["data.dataset=bench_random", "data.noise_type=none"]


def subset_overrides(train_samples: int) -> list[str]:
    """A large dataset trains on a subset: a step's time does not depend on the data set's size, but the
    passes a method makes before its first step (TCL's detection over the whole training set) would take
    longer than the measurement on one CPU thread; their share is added from the plan's FLOPs."""
    return [f"data.train_subset={SUBSET}", f"data.test_subset={SUBSET // 4}"] if train_samples > 2 * SUBSET else []


def measure_child(preset: str, seconds: int, out: str) -> None:
    """In the child process: train ``preset`` for ``seconds`` and print the stop line's figures as JSON."""
    import numpy as np
    import torch

    from tcl_lite import load_config
    from tcl_lite.data.catalog import register_dataset
    from tcl_lite.data.datasets import TensorImages
    from tcl_lite.data.entries import Dataset, RawData, SplitCounts
    from tcl_lite.engine import train
    from tcl_lite.plan.dataset_meta import dataset_meta

    meta = dataset_meta(load_config(preset, ["data.train_subset=0"]), (50000, 10000) if "jpeg" in preset else None)

    class RandomImages(Dataset):
        name, help = "bench_random", "random images of a preset's dataset's shape (bench/preset_estimates.py)"

        def counts(self, cfg):  # noqa: ANN001, ANN202 - the Dataset interface
            return SplitCounts(meta.train + meta.val, 0, meta.test, meta.num_classes)

        def read(self, cfg, seed):  # noqa: ANN001, ANN202
            g = torch.Generator().manual_seed(seed)
            n, size = meta.train + meta.val + meta.test, meta.image_size
            x = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
            y = (np.arange(n) % meta.num_classes).astype(np.int64)
            split = meta.train + meta.val
            return RawData(TensorImages(x[:split]), y[:split], TensorImages(x[split:]), y[split:],
                           [str(k) for k in range(meta.num_classes)], ((0.5,) * 3, (0.25,) * 3), True)

    register_dataset(RandomImages)
    cfg = load_config(preset, [*synthetic_overrides(preset), *subset_overrides(meta.train), f"output_dir={out}",
                               f"train.time_budget={seconds}s", "train.log_every=1", "data.num_workers=0"])
    train(cfg, estimate=False)


def measure(preset: str, seconds: int) -> tuple[float | None, str]:
    """(CPU seconds per epoch, how) from a child process's short run."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
        proc = subprocess.run([sys.executable, __file__, "--child", preset, "--seconds", str(seconds), "--out",
                               str(Path(tmp) / "run")], env=env, capture_output=True, text=True, cwd=ROOT)
        found = STOP.search(proc.stdout)
        run = Path(tmp) / "run"
        subset = bool(_config(run).get("data", {}).get("train_subset"))
        if proc.returncode == 0 and not subset and (run / "metrics.jsonl").is_file():  # whole epochs, evaluation
            last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
            return last["time"] / last["epoch"], f"{last['epoch']} epochs in {last['time'] / 60:.1f} min"
        if proc.returncode != 0 or found is None:
            return None, f"failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}"
        steps_per_epoch, ratio = _epoch_steps_and_ratio(preset)
        per_step, how = _steady_step_seconds(run / "train.log")
        if per_step is None:  # fewer than 3 steps: the stop line's time, first step (warm-up) included
            per_step = float(found[1]) * 60 / int(found[3])
            how = f"{found[3]} step(s) in {found[1]} min, the first included"
        return per_step * steps_per_epoch * ratio, f"{how}; x {steps_per_epoch} steps, x {ratio:.2f} passes + eval"


def _steady_step_seconds(log: Path) -> tuple[float | None, str]:
    """Seconds per step between the first and the last step line of train.log (the first step, which
    includes the kernels' warm-up, excluded); None with fewer than three steps."""
    import datetime

    steps = []
    for line in log.read_text().splitlines():
        m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) step (\d+):", line)
        if m:
            steps.append((datetime.datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S"), int(m[2])))
    if len(steps) < 3:
        return None, ""
    (t0, s0), (t1, s1) = steps[0], steps[-1]
    seconds = (t1 - t0).total_seconds()
    return seconds / (s1 - s0), f"steps {s0 + 1}-{s1}: {seconds:.0f} s"


def _config(run: Path) -> dict:
    import yaml

    path = run / "config.yaml"
    return yaml.safe_load(path.read_text()) if path.is_file() else {}


def _epoch_steps_and_ratio(preset: str) -> tuple[int, float]:
    """Steps of the full data set's first epoch, and its FLOPs / its training steps' FLOPs (the CPU plan):
    the share of the method's passes and the evaluation."""
    from tcl_lite import load_config
    from tcl_lite.plan.dataset_meta import dataset_meta
    from tcl_lite.plan.runs import RunTracer

    cfg = load_config(preset)
    samples = (50000, 10000) if "jpeg" in preset else None  # the JPEG folder is CIFAR-10's
    run = RunTracer(cfg, dataset_meta(cfg, samples), cpu_workspace=True).run()
    kind = next(iter(run.kinds()))
    flops = run.epoch_flops(kind)
    steps = sum(s.steps for s in run.steps if s.kind == kind)
    return steps, sum(flops.values()) / max(1.0, flops["training"])


def t4_columns(preset: str) -> list[str]:
    """T4 min/epoch of each epoch kind, peak GiB, the settings (the notebook's for a T4)."""
    from tcl_lite.plan.planner import gpu_settings
    from tcl_lite.plan.report import duration

    try:
        plan, overrides = gpu_settings(preset, [], "Tesla T4", 15.0, 7.5)
    except Exception as e:  # a preset that cannot run there: say why in the table
        return [f"cannot run: {e}"[:80], "-", "-"]
    v = plan.verdicts[0]
    kinds = v.epoch_seconds() if plan.meta.sizes_known else {}
    if not kinds:
        return ["- (data not here: sizes unknown)", f"{v.device_bytes / 2**30:.1f}", changed(preset, overrides)]
    times = " / ".join(duration(s) if s >= 1 else "< 1 s" for s in kinds.values())
    label = " / ".join(kinds) if len(kinds) > 1 else ""
    return [times + (f" ({label})" if label else ""), f"{v.device_bytes / 2**30:.1f}", changed(preset, overrides)]


def changed(preset: str, overrides: list[str]) -> str:
    """The notebook's T4 overrides that differ from the preset's own settings ("as is" when none)."""
    from tcl_lite.config import flat_settings, load_config

    flat = flat_settings(load_config(preset))
    diff = [o for o in overrides if str(flat.get(o.split("=")[0])).lower() != o.split("=", 1)[1]]
    return " ".join(diff) or "as is"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="", help="comma-separated presets (default: every shipped one)")
    p.add_argument("--seconds", type=int, default=90, help="time budget of each measured run")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return measure_child(args.child, args.seconds, args.out)
    from tcl_lite import load_config
    from tcl_lite.plan.report import duration
    from tcl_lite.presets import available_presets

    presets = args.presets.split(",") if args.presets else available_presets()
    print_header(f"preset_estimates: {len(presets)} presets; CPU measured ({args.seconds} s runs, 1 thread), T4 "
                 f"predicted by the plan; load before: {os.getloadavg()[0]:.1f}")
    measured: dict[str, tuple[float | None, str]] = {}
    rows = []
    for preset in presets:
        if "mlnt" in preset:
            cpu, how = None, "needs its CE run first"
        elif load_config(preset).train.mixed_precision == "fp16":
            cpu, how = None, "fp16: a GPU-only preset"
        else:
            key = timing_key(preset)
            if key not in measured:
                measured[key] = measure(preset, args.seconds)
            cpu, how = measured[key]
        rows.append([preset, duration(cpu) if cpu else "-", how, *t4_columns(preset), f"{os.getloadavg()[0]:.1f}"])
        print(" | ".join(rows[-1]), flush=True)
    table = markdown_table(["preset", "CPU per epoch (measured, 1 thread)", "CPU run measured",
                            "T4 per epoch (predicted)", "T4 peak GiB (predicted)", "T4 settings (notebook's changes)",
                            "load"], rows)
    print(table + f"\n\nload after: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")
    OUT.mkdir(exist_ok=True)
    (OUT / "preset_estimates.md").write_text(table + "\n")
    print(f"wrote {OUT / 'preset_estimates.md'}")


if __name__ == "__main__":
    main()
