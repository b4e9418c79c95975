"""``tcl-lite audit FOLDER``: check the labels of an image folder in one command: a short cross-entropy
run suited to the folder's size, then the ranking of its labels and the gallery (``OUT/issues/``)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tcl_lite.cli import paths
from tcl_lite.cli.dispatch import run_command

DESCRIPTION = "check a folder's labels: a short run suited to its size, then the ranking and gallery"


def audit_settings(num_images: int, gpu: bool) -> list[str]:
    """Config overrides for a short run: about 3,000 optimizer-steps' worth of images is enough for a
    model's own confidence to separate wrong labels, and short enough not to memorise them."""
    epochs = max(3, min(30, round(60_000 / max(1, num_images))))
    batch = max(8, min(64, 2 ** max(0, (num_images // 16).bit_length() - 1)))  # ~16+ steps per epoch
    size, arch = (64, "resnet18") if gpu else (32, "tiny_cnn")
    return ["method=ce", "data.dataset=imagefolder", "data.noise_type=none", f"data.image_size={size}",
            f"model.arch={arch}", f"train.epochs={epochs}", f"train.batch_size={batch}", "optim.lr=0.4",
            "train.log_every=50", "data.val_fraction=0" if num_images < 500 else "data.val_fraction=0.1",
            f"data.num_workers={min(2, os.cpu_count() or 1)}"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tcl-lite audit", description="Train briefly on an image folder and rank its "
                                "labels by how likely they are wrong (CSV + gallery).")
    p.add_argument("folder", help="<class>/<image> folder, or a root with train/<class>/<image>")
    p.add_argument("--out", help="run directory (default: runs/audit-<folder name>)")
    p.add_argument("--top", type=int, default=24, help="suspects shown in the gallery")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=5 "
                   "model.arch=timm:resnet18 model.pretrained=true")
    return p


def run(argv: list[str]) -> int:
    args = parser().parse_intermixed_args(argv)
    paths.check_args("audit", [("FOLDER", args.folder, "folder"), ("--out", args.out, "output")])
    # torch (engine, data, results): imported once the arguments are parsed
    import torch

    from tcl_lite.config import load_config
    from tcl_lite.engine.trainer import train
    from tcl_lite.inference.audit import count_images, dataset_root
    from tcl_lite.results.label_issues import find_label_issues, write_issues

    folder = Path(args.folder)
    out = Path(args.out) if args.out else Path("runs") / f"audit-{folder.resolve().name}"
    root = dataset_root(folder, out)
    num_images = count_images(root)
    overrides = [*audit_settings(num_images, torch.cuda.is_available()), f"data.root={root}", f"output_dir={out}",
                 *args.overrides]
    print(f"audit: {num_images} images in {folder}; training {out} with {' '.join(overrides[:9])}")
    cfg = load_config(None, overrides)
    paths.check_config(cfg)
    train(cfg, resume=True)  # resume: a second audit reuses/continues the run
    issues = find_label_issues(out)
    if root != folder and issues.paths is not None:  # name the user's files, not the link's
        issues.paths = [str(folder / os.path.relpath(p, root / "train")) for p in issues.paths]
    summary = write_issues(issues, out / "issues", top=args.top)
    print(f"wrote {out / 'issues' / 'label_issues.csv'} (every image, most suspect first) and "
          f"{out / 'issues' / 'label_issues.png'} (the {summary['shown_suspects']} top suspects)")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("audit", run, argv)
