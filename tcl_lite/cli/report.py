"""``tcl-lite report RUN_DIR [--out DIR]``: figures, report.md and the cleaned labels of a run directory."""

from __future__ import annotations

import argparse

from tcl_lite.cli.dispatch import run_command

DESCRIPTION = "figures, report.md and cleaned labels of a run directory"


def run(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="tcl-lite report",
                                description="Figures, a Markdown summary and the cleaned labels of a run directory.")
    p.add_argument("run_dir", help="run directory written by train.py (config.yaml, metrics.jsonl, checkpoints/)")
    p.add_argument("--out", help="output folder (default: RUN_DIR/report)")
    args = p.parse_args(argv)
    from tcl_lite.results.report import make_report  # matplotlib, torch: after the arguments are parsed

    out = make_report(args.run_dir, args.out)
    written = sorted(f.name for f in out.iterdir() if f.suffix in (".png", ".md", ".csv"))
    print(f"wrote {out}: {', '.join(written)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("report", run, argv)
