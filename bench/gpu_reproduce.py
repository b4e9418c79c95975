"""Helpers of ``bench/gpu_reproduce.sh``: the data arguments, whether a run is finished, and the
BENCHMARKS.md table its figures go to (rows replaced in place, so reruns update rather than duplicate).

    python bench/gpu_reproduce.py data-args [--data PATH]     # the data.* overrides, one per line
    python bench/gpu_reproduce.py done RUN_DIR EPOCHS         # exit 0 when RUN_DIR has its last epoch
    python bench/gpu_reproduce.py table --epochs E RUN_DIR... # upsert their rows into BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import sys
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import CIFAR_TARBALL, OUT, ROOT, read_metrics

START, END = "<!-- gpu-reproduce:start -->", "<!-- gpu-reproduce:end -->"
HEADERS = ["run", "method", "config", "epochs done", "test acc % (last)", "best %", "detection AUC (last)",
           "training time h (all sessions)", "device", "updated (UTC)"]
PAYLOAD_TARBALL = ROOT / "bench" / "gpu_payload" / CIFAR_TARBALL.name


def data_args(data: str | None) -> list[str]:
    """torchvision's CIFAR-10 folder (cifar-10-batches-py) or the JPEG image folder / tarball, extracted once
    into bench/out/ (gitignored; kept across sessions on the same machine)."""
    if data and (Path(data) / "cifar-10-batches-py").is_dir():
        return ["data.dataset=cifar10", f"data.root={data}", "data.download=false"]
    if data and (Path(data) / "train").is_dir():
        return ["data.dataset=imagefolder", f"data.root={data}"]
    tarball = Path(data) if data else next((p for p in (PAYLOAD_TARBALL, CIFAR_TARBALL) if p.is_file()), None)
    if tarball is None or not tarball.is_file():
        raise SystemExit(f"no CIFAR-10 data: pass DATA=PATH (torchvision's CIFAR-10 folder, the JPEG image folder "
                         f"or {CIFAR_TARBALL.name}), or copy the tarball to {PAYLOAD_TARBALL}")
    root, marker = OUT / "cifar10-jpeg", OUT / ".cifar10-jpeg.extracted"
    if not (marker.is_file() and (root / "train").is_dir()):
        OUT.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tarball) as tar:
            tar.extractall(OUT, filter="data")
        marker.write_text("ok\n")
    return ["data.dataset=imagefolder", f"data.root={root}"]


def training_hours(metrics: list[dict[str, Any]]) -> float:
    """Sum over sessions of the time to each session's last epoch (``time`` restarts at each session)."""
    total, prev = 0.0, 0.0
    for m in metrics:
        t = float(m.get("time", 0.0))
        total += t - prev if t >= prev else t
        prev = t
    return total / 3600


def run_row(run_dir: Path, epochs: int, device: str, now: str) -> list[str]:
    metrics = read_metrics(run_dir)
    last = metrics[-1] if metrics else {}
    config = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").is_file() else ""
    method = next((ln.split(":", 1)[1].strip() for ln in config.splitlines() if ln.startswith("method:")), "?")
    auc = last.get("detection_auc")
    best = max((m.get("test_acc", 0.0) for m in metrics), default=None)
    return [run_dir.name, method, (run_dir / "preset.txt").read_text().strip() if (run_dir / "preset.txt").is_file()
            else "-", f"{last.get('epoch', 0)} / {epochs}",
            f"{100 * last['test_acc']:.2f}" if "test_acc" in last else "-",
            f"{100 * best:.2f}" if best is not None else "-", f"{auc:.4f}" if auc is not None else "-",
            f"{training_hours(metrics):.2f}", device, now]


def upsert_rows(text: str, rows: list[list[str]]) -> str:
    """``text`` with the table between the markers holding ``rows``: a row whose first cell (the run) is
    already there replaces it in place, a new one is appended. Without the markers, a table is appended."""
    if START not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    block, tail = rest.split(END, 1)
    existing: dict[str, str] = {}
    for line in block.strip().splitlines()[2:]:  # after the header and the rule
        if line.startswith("|"):
            existing[line.split("|")[1].strip()] = line
    for row in rows:
        existing[row[0]] = "| " + " | ".join(row) + " |"
    table = ["| " + " | ".join(HEADERS) + " |", "| " + " | ".join("---" for _ in HEADERS) + " |", *existing.values()]
    return f"{head}{START}\n" + "\n".join(table) + f"\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("data-args")
    d.add_argument("--data")
    f = sub.add_parser("done")
    f.add_argument("run_dir", type=Path)
    f.add_argument("epochs", type=int)
    t = sub.add_parser("table")
    t.add_argument("--epochs", type=int, required=True)
    t.add_argument("--benchmarks", type=Path, default=ROOT / "BENCHMARKS.md")
    t.add_argument("run_dirs", type=Path, nargs="+")
    args = p.parse_args(argv)
    if args.command == "data-args":
        print("\n".join(data_args(args.data)))
        return 0
    if args.command == "done":
        metrics = read_metrics(args.run_dir)
        return 0 if metrics and metrics[-1].get("epoch") == args.epochs else 1
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    now = f"{datetime.now(UTC):%Y-%m-%d %H:%M}"
    rows = [run_row(r, args.epochs, device, now) for r in args.run_dirs if (r / "config.yaml").is_file()]
    args.benchmarks.write_text(upsert_rows(args.benchmarks.read_text(), rows))
    print("\n".join("| " + " | ".join(r) + " |" for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
