"""``tcl-lite export-model RUN_DIR --out DIR``: the trained classifier as safetensors + JSON."""

from __future__ import annotations

import argparse
import json

from tcl_lite.cli import paths
from tcl_lite.cli.dispatch import run_command

DESCRIPTION = "the trained classifier as safetensors + JSON (tcl_lite.load_model)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tcl-lite export-model",
                                description="Export a run's classifier as safetensors + JSON, for tcl_lite.load_model.")
    p.add_argument("run_dir", help="run directory written by train.py")
    p.add_argument("--out", required=True, help="folder to write model.safetensors and model.json to")
    p.add_argument("--checkpoint", default="auto", help="auto (best when kept, else final), best, final or a folder")
    return p


def run(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    paths.check_args("export-model", [("RUN_DIR", args.run_dir, "run"), ("--out", args.out, "output"),
                                      ("--checkpoint", paths.checkpoint_arg(args.checkpoint), "folder")])
    from tcl_lite.inference.export_model import export_model  # torch: after the arguments are parsed

    out = export_model(args.run_dir, args.out, args.checkpoint)
    meta = json.loads((out / "model.json").read_text())
    print(f"wrote {out}/model.safetensors and model.json ({meta['model']['arch']}, {meta['num_classes']} classes, "
          f"{meta['image_size']} px, from {meta['source']['checkpoint']}); load with tcl_lite.load_model({str(out)!r})")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("export-model", run, argv)
