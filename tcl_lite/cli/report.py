"""``tcl-lite report RUN_DIR [--out DIR]``: figures, report.md and the cleaned labels of a run directory."""

from __future__ import annotations

import argparse

from tcl_lite.cli import paths
from tcl_lite.cli.dispatch import run_command

DESCRIPTION = "figures, report.md and cleaned labels of a run directory"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tcl-lite report",
                                description="Figures, a Markdown summary and the cleaned labels of a run directory.")
    p.add_argument("run_dir", help="run directory written by train.py (config.yaml, metrics.jsonl, checkpoints/)")
    p.add_argument("--out", help="output folder (default: RUN_DIR/report)")
    return p


def run(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    paths.check_args("report", [("RUN_DIR", args.run_dir, "run"), ("--out", args.out, "output")])
    from tcl_lite.results.report import make_report  # matplotlib, torch: after the arguments are parsed

    out = make_report(args.run_dir, args.out)
    written = sorted(f.name for f in out.iterdir() if f.suffix in (".png", ".md", ".csv"))
    print(f"wrote {out}: {', '.join(written)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("report", run, argv)
