"""``tcl-lite plan --config PRESET [key=value ...] [--gpu t4|...|all] [--json]``: memory and time of a run
on each GPU, predicted on this machine without a GPU and without the data (``tcl_lite.plan``).

The options and the config are parsed before torch is imported, so ``--help`` and a bad key answer at once."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tcl_lite import register_builtins
from tcl_lite.cli import paths
from tcl_lite.cli.dispatch import run_command
from tcl_lite.config import load_config
from tcl_lite.errors import UserError

register_builtins()  # the built-in methods, architectures, datasets and config checks (no torch)

DESCRIPTION = "predicted memory, FLOPs and time of a run on each GPU, and what makes it fit (no GPU needed)"
GPU_KEYS = ("t4", "l4", "a100-40", "a100-80", "h100", "p100")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tcl-lite plan",
        description="Predict a run's memory per step (by category), its FLOPs and, per GPU, whether it fits, the "
                    "smallest change that makes it fit and the time per epoch and per run. Every step is traced "
                    "under fake tensors on this machine's CPU: no GPU and no data set needed. The GPU figures are "
                    "estimates (tcl_lite/plan/gpus.py) until bench/gpu_check.py measures them.",
        epilog="Examples: tcl-lite plan --config cifar10_tcl_sym50 --gpu all | tcl-lite plan --config "
               "cifar10_dividemix_sym50 train.batch_size=128 --json")
    p.add_argument("--config", help="a preset by name (configs/) or a YAML file; default: the embedded digits run")
    p.add_argument("--gpu", default="t4", help=f"{'|'.join(GPU_KEYS)}|all, or several comma-separated (default t4)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON instead of the tables")
    p.add_argument("--samples", metavar="TRAIN,TEST",
                   help="data set sizes to plan with when its files are not on this machine (image folders, file "
                        "lists); memory does not depend on them, the time per epoch does")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, dotted keys")
    return p


def _gpu_keys(text: str) -> list[str]:
    keys = list(GPU_KEYS) if text == "all" else [k.strip().lower() for k in text.split(",") if k.strip()]
    unknown = [k for k in keys if k not in GPU_KEYS]
    if unknown or not keys:
        raise UserError(f"--gpu {text!r}: choose {', '.join(GPU_KEYS)} or all")
    return keys


def _samples(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        train, _, test = text.partition(",")
        sizes = int(train), int(test or 0)
    except ValueError:
        sizes = (0, 0)
    if sizes[0] < 1 or sizes[1] < 0:
        raise UserError(f"--samples {text!r}: give TRAIN,TEST sample counts, e.g. 50000,10000")
    return sizes


def run(argv: list[str]) -> int:
    args = parser().parse_intermixed_args(argv)
    keys, samples = _gpu_keys(args.gpu), _samples(args.samples)
    paths.check_args("plan", [("--config", args.config if args.config and Path(args.config).exists() else None,
                               "file")])
    cfg = load_config(args.config, args.overrides)
    paths.check_config(cfg)  # a damaged file the config names (the plan counts a folder's or a list's files)
    # torch: after the arguments and the config are checked (it takes seconds to import).
    from tcl_lite.plan.gpus import GPUS
    from tcl_lite.plan.planner import make_plan
    from tcl_lite.plan.report import plan_json, plan_text

    plan = make_plan(cfg, [GPUS[k] for k in keys], name=args.config or "", samples=samples)
    print(json.dumps(plan_json(plan), indent=1) if args.json else plan_text(plan))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("plan", run, argv)
