"""Command line: ``python train.py [--config F] [--output-dir D] [--resume [PATH]] [key=value ...]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tcl_lite.config import ConfigError, load_config


def _user_errors() -> tuple[type[Exception], ...]:
    from tcl_lite.checkpoints.manager import CheckpointError
    from tcl_lite.data import DataError
    from tcl_lite.engine.nonfinite import NonFiniteLossError
    from tcl_lite.models import ModelError

    return ConfigError, DataError, ModelError, CheckpointError, NonFiniteLossError


def launcher() -> str:
    """How the user started training: the installed command (or ``python -m tcl_lite``) or the checkout's script."""
    return "tcl-lite train" if Path(sys.argv[0]).name in ("tcl-lite", "__main__.py") else "train.py"


def continue_command(out: str | Path) -> str:
    """The command that resumes the run in ``out``, in the form the user started it with."""
    prog = "tcl-lite train" if launcher() == "tcl-lite train" else "accelerate launch train.py"
    return f"{prog} --resume --output-dir {out}"


def train_parser() -> argparse.ArgumentParser:
    from tcl_lite.methods import METHODS

    p = argparse.ArgumentParser(
        prog=launcher(), description=f"Train an image classifier on noisy labels (method={'|'.join(METHODS)}).",
        epilog="Examples: python train.py | python train.py method=tcl train.epochs=5 | "
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


def resolve_config(args: argparse.Namespace):  # noqa: ANN201 - returns Config
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


def main_train(argv: list[str] | None = None) -> int:
    args = parse_train_args(argv)
    try:
        cfg = resolve_config(args)
        from tcl_lite.engine import train

        train(cfg, resume=args.resume, restart=args.restart, allow_data_change=args.allow_data_change)
    except _user_errors() as e:
        print(f"tcl_lite: error: {e}", file=sys.stderr)
        return 2
    return 0
