"""``tcl-lite report RUN_DIR [--out DIR] [--write-cleaned]``: figures, report.md and the labels of a run directory
as its trust verdict allows (``results/report.py``); the verdict is printed first."""

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
    p.add_argument("--write-cleaned", action="store_true",
                   help="write cleaned_labels.csv for a run judged doubtful too (every row marked doubtful)")
    return p


def run(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    paths.check_args("report", [("RUN_DIR", args.run_dir, "run"), ("--out", args.out, "output")])
    # matplotlib, torch: after the arguments are parsed
    from tcl_lite.algorithms.trust_files import load_trust, missing_verdict
    from tcl_lite.results.report import make_report

    out = make_report(args.run_dir, args.out, write_cleaned=args.write_cleaned)
    record = load_trust(args.run_dir)
    print(f"trust verdict: {(record.verdict if record is not None else missing_verdict()).headline()}")
    written = sorted(f.name for f in out.iterdir() if f.suffix in (".png", ".md", ".csv"))
    print(f"wrote {out}: {', '.join(written)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("report", run, argv)
