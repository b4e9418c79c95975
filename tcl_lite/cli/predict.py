"""``tcl-lite predict RUN_DIR|EXPORT_DIR IMAGES...|FOLDER --out preds.csv``: classes of images (CSV)."""

from __future__ import annotations

import argparse

from tcl_lite.cli import paths
from tcl_lite.cli.dispatch import run_command

DESCRIPTION = "classes of images or a folder with a trained run's model (CSV)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tcl-lite predict", description="Classify images with a trained run or an "
                                "exported model; writes a CSV.")
    p.add_argument("model", help="run directory (train.py) or exported model folder (export-model)")
    p.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument("--out", default="predictions.csv", help="CSV to write (default: predictions.csv)")
    p.add_argument("--checkpoint", default="auto", help="run directory: auto (best when kept, else final), best, "
                   "final or a checkpoint folder")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", help="e.g. cpu or cuda:0 (default: the GPU when there is one)")
    return p


def run(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    paths.check_args("predict", [("MODEL", args.model, "model"), ("--out", args.out, "output-file"),
                                 ("--checkpoint", paths.checkpoint_arg(args.checkpoint), "folder")])
    from tcl_lite.inference.predict import image_files, load_classifier, predict, write_predictions  # torch

    files = image_files(args.images)
    model = load_classifier(args.model, args.checkpoint)
    probs = predict(model, files, batch_size=args.batch_size, device=args.device)
    write_predictions(args.out, files, probs, model.class_names, args.top_k)
    print(f"wrote {args.out}: {len(files)} images")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("predict", run, argv)
