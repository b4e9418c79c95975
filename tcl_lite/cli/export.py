"""``tcl-lite export RUN_DIR_OR_CHECKPOINT [--out DIR]``: a method's per-sample verdicts as CSV and .npy."""

from __future__ import annotations

import argparse

from tcl_lite.cli import paths
from tcl_lite.cli.dispatch import run_command

DESCRIPTION = "per-sample clean probabilities (and corrected/suggested labels) of a run or checkpoint"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tcl-lite export",
                                description="Export a run's per-sample verdicts (clean probability, corrected or "
                                "suggested label) per training sample.")
    p.add_argument("path", help="run directory (its newest valid checkpoint) or a checkpoint directory")
    p.add_argument("--out", help="output folder (default: RUN/export/CHECKPOINT_NAME)")
    return p


def run(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    paths.check_args("export", [("PATH", args.path, "folder"), ("--out", args.out, "output")])
    from tcl_lite.results.export import CSV_NAME, export  # torch: after the arguments are parsed

    out = export(args.path, args.out)
    print(f"wrote {out / CSV_NAME} and the .npy columns")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("export", run, argv)
