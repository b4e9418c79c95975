"""``tcl-lite train`` / ``python train.py [--config F] [--output-dir D] [--resume [PATH]] [key=value ...]``.

The arguments and the config are parsed and checked before the engine (and torch) is imported, so
``--help`` and every config error answer at once.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import tcl_lite.methods  # noqa: F401 - registers the built-in methods (names and config sections, no torch)
import tcl_lite.models.archs  # noqa: F401 - registers the model.arch check (no torch)
import tcl_lite.runlog.trackers  # noqa: F401 - registers the train.log_with check
from tcl_lite.cli.dispatch import run_command
from tcl_lite.config import Config, load_config
from tcl_lite.registry import METHODS
from tcl_lite.runlog.launch import launcher

DESCRIPTION = "train or resume a run (the options of train.py)"


def train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=launcher(), description=f"Train an image classifier on noisy labels (method={'|'.join(METHODS)}).",
        epilog="Examples: tcl-lite train | tcl-lite train method=tcl train.epochs=5 | "
               "accelerate launch train.py --config configs/cifar10_tcl_sym50.yaml --resume")
    p.add_argument("--config", help="a preset by name (e.g. digits_tcl, cifar10_tcl_sym50: the files of configs/) or "
                                    "a YAML file; default: the embedded digits run")
    p.add_argument("--output-dir", help="run directory (overrides output_dir)")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="PATH",
                   help="continue from the newest valid checkpoint of the run directory, or from PATH "
                        "(a checkpoint or a run directory); starts a new run when there is none yet")
    p.add_argument("--restart", action="store_true",
                   help="start afresh in a run directory that holds checkpoints: its files are moved to "
                        "OUTPUT/previous-<time>/ (nothing is deleted)")
    p.add_argument("--allow-data-change", action="store_true",
                   help="resume even though data-defining settings (seed, data.*) differ from the run's")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, dotted keys")
    return p


def resolve_config(args: argparse.Namespace) -> Config:
    """CLI arguments -> Config. When resuming without --config, the run's saved config is the base."""
    overrides = list(args.overrides)
    out = args.output_dir
    if out is None and isinstance(args.resume, str) and Path(args.resume, "checkpoints").is_dir():
        out = args.resume  # --resume RUN_DIR continues that run in place
    if out is not None:
        overrides.append(f"output_dir={out}")
    base = args.config
    if args.resume and base is None:
        run_dir = Path(out) if out else Path(load_config(None, overrides).output_dir)
        if (run_dir / "config.yaml").is_file():
            base = run_dir / "config.yaml"
    return load_config(base, overrides)


def parse_train_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Options and ``key=value`` overrides in any order."""
    args = train_parser().parse_intermixed_args(argv)
    if isinstance(args.resume, str) and "=" in args.resume and not Path(args.resume).exists():
        # `--resume key=value`: argparse took the override for the optional PATH
        args.overrides.insert(0, args.resume)
        args.resume = True
    return args


def run(argv: list[str]) -> int:
    args = parse_train_args(argv)
    cfg = resolve_config(args)
    from tcl_lite.engine.trainer import train  # torch: only once the arguments and the config are valid

    train(cfg, resume=args.resume, restart=args.restart, allow_data_change=args.allow_data_change)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("train", run, argv)


main_train = main  # the name train.py and the tests call
