"""``tcl-lite issues RUN_DIR [--out DIR] [--top N] [--checkpoint final|best|PATH]``.

Writes ``label_issues.csv`` (every training sample, most suspect first: rank, index, given and
suggested label and name, score[, true_label][, path]), ``label_issues.png`` (the gallery) and
``summary.json`` (precision@N when the true labels are known) to ``RUN_DIR/issues/``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tcl_lite.cli import paths
from tcl_lite.cli.dispatch import run_command

DESCRIPTION = "training samples ranked by how likely their label is wrong: CSV + gallery PNG"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tcl-lite issues",
                                description="Rank a run's training labels by how likely they are wrong; CSV + gallery.")
    p.add_argument("run_dir", help="run directory written by train.py")
    p.add_argument("--out", help="output folder (default: RUN_DIR/issues)")
    p.add_argument("--top", type=int, default=24, help="suspects (and trusted samples) shown in the gallery")
    p.add_argument("--checkpoint", default="final", help="final (default), best, or a checkpoint folder")
    p.add_argument("--batch-size", type=int, default=256)
    return p


def run(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    paths.check_args("issues", [("RUN_DIR", args.run_dir, "run"), ("--out", args.out, "output"),
                                ("--checkpoint", paths.checkpoint_arg(args.checkpoint), "folder")])
    from tcl_lite.results.label_issues import find_label_issues, write_issues  # torch: after the arguments

    issues = find_label_issues(args.run_dir, args.checkpoint, batch_size=args.batch_size)
    out = Path(args.out) if args.out else Path(args.run_dir) / "issues"
    summary = write_issues(issues, out, top=args.top)
    line = f"wrote {out / 'label_issues.csv'} ({len(issues)} samples) and {out / 'label_issues.png'}"
    if summary["precision_at_top"] is not None:
        line += (f"; precision@{summary['top']} {summary['precision_at_top']:.3f} "
                 f"(a random ranking: {summary['noise_rate']:.3f})")
    print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("issues", run, argv)
