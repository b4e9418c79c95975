"""``tcl-lite train`` / ``python train.py [--config F] [--output-dir D] [--resume [PATH]] [key=value ...]``.

The arguments and the config are parsed and checked before the engine (and torch) is imported, so
``--help`` and every config error answer at once. SIGTERM and Ctrl-C are handled from the first
instruction (``tcl_lite/signals.py``; ``train.py`` installs the handlers before this module loads).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tcl_lite import register_builtins, signals
from tcl_lite.cli import paths
from tcl_lite.cli.dispatch import run_command
from tcl_lite.config import Config, load_config
from tcl_lite.errors import ConfigError
from tcl_lite.registry import METHODS
from tcl_lite.runlog.launch import launcher

register_builtins()  # the built-in methods, architectures, datasets and config checks (no torch)

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
                        "(a checkpoint or a run directory); starts a new run when there is none yet. PATH of "
                        "another run with --output-dir NEW forks it: NEW must be empty (or --restart)")
    p.add_argument("--restart", action="store_true",
                   help="start afresh in a run directory that holds checkpoints: its files are moved to "
                        "OUTPUT/previous-<time>/ (nothing is deleted)")
    p.add_argument("--allow-data-change", action="store_true",
                   help="resume even though data-defining settings (seed, data.*) differ from the run's")
    p.add_argument("--allow-config-change", action="store_true",
                   help="resume even though settings that change the training steps (train.batch_size, "
                        "accumulation, precision, augmentation placement, optim.*, the method's...) differ from "
                        "the run's; each change is logged in train.log and status.json")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, dotted keys")
    return p


def resolve_config(args: argparse.Namespace) -> Config:
    """CLI arguments -> Config. When resuming without --config, the config.yaml of the run resumed is the
    base: the run directory's own, or, for ``--resume PATH``, that of the run PATH belongs to (a fork
    continues its parent's settings)."""
    overrides = list(args.overrides)
    out = args.output_dir
    source = run_dir_of(Path(args.resume)) if isinstance(args.resume, str) else None
    if out is None and source is not None:
        out = str(source)  # --resume RUN_DIR (or RUN/checkpoints/NAME) continues that run in place
    if out is not None:
        overrides.append(f"output_dir={out}")
    base = args.config
    if args.resume and base is None:
        run_dir = source or (Path(out) if out else Path(load_config(None, overrides).output_dir))
        if (run_dir / "config.yaml").is_file():
            base = run_dir / "config.yaml"
        elif isinstance(args.resume, str) and source is None:
            raise ConfigError(f"--resume {args.resume}: not a run directory or a checkpoint inside one "
                              "(RUN/checkpoints/NAME), so its config is unknown; give the run's config with "
                              "--config (e.g. the config.yaml of the run it came from)")
    return load_config(base, overrides)


def run_dir_of(path: Path) -> Path | None:
    """The run directory of a ``--resume`` path: ``RUN`` (with checkpoints/) itself, ``RUN/checkpoints``
    or ``RUN/checkpoints/NAME``; None for anything else (a checkpoint copied elsewhere)."""
    if (path / "checkpoints").is_dir():
        return path
    for candidate in (path.parent, path.parent.parent):
        if path.is_relative_to(candidate / "checkpoints") and (candidate / "checkpoints").is_dir():
            return candidate
    return None


def parse_train_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Options and ``key=value`` overrides in any order."""
    args = train_parser().parse_intermixed_args(argv)
    if isinstance(args.resume, str) and "=" in args.resume and not Path(args.resume).exists():
        # `--resume key=value`: argparse took the override for the optional PATH
        args.overrides.insert(0, args.resume)
        args.resume = True
    return args


def run(argv: list[str]) -> int:
    with signals.handled():  # SIGTERM / Ctrl-C from here on (train.py: already from its first line)
        args = parse_train_args(argv)
        paths.check_args("train", [("--output-dir", args.output_dir, "output"),
                                   ("--resume", args.resume if isinstance(args.resume, str) else None, "folder"),
                                   ("--config", args.config if args.config and Path(args.config).exists() else None,
                                    "file")])
        cfg = resolve_config(args)
        paths.check_config(cfg)  # a missing, empty or damaged file named in the config: now, not after torch
        from tcl_lite.engine.trainer import train  # torch: only once the arguments and the config are valid

        try:
            train(cfg, resume=args.resume, restart=args.restart, allow_data_change=args.allow_data_change,
                  allow_config_change=args.allow_config_change)
        except KeyboardInterrupt:  # a second Ctrl-C: stop at once (the newest checkpoint stays)
            print(f"{launcher()}: interrupted (a second Ctrl-C); continue from the newest checkpoint with --resume",
                  file=sys.stderr)
            return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("train", run, argv)


main_train = main  # the name train.py and the tests call
parser = train_parser  # every command module has ``parser()`` (tests/test_paths.py walks them)
