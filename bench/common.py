"""Shared helpers of the benchmark scripts (not a benchmark itself).

Peak-memory reading reuses ``bench/mlnt_memory.py``'s helpers (VmHWM reset through clear_refs), so
both scripts measure memory the same way.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
OUT = BENCH / "out"  # gitignored
CIFAR_TARBALL = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"

for _p in (str(ROOT), str(BENCH)):  # runnable as `python bench/x.py` from anywhere
    if _p not in sys.path:
        sys.path.insert(0, _p)

from mlnt_memory import _reset_cpu_peak, _status_kib  # noqa: E402 - needs the path above

__all__ = ["ROOT", "OUT", "reset_cpu_peak", "status_kib", "machine_info", "markdown_table", "run_train",
           "read_metrics", "cifar_root", "print_header"]


def reset_cpu_peak() -> int:
    """Release freed heap, reset VmHWM; returns the current RSS in bytes (the step's baseline)."""
    return _reset_cpu_peak()


def status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS, VmHWM)."""
    return _status_kib(field)


def machine_info() -> str:
    """One line naming what the numbers were measured on: date, CPU model, cores, load, torch."""
    import torch

    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return (f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {model}, {os.cpu_count()} cores (load avg {load:.1f} at "
            f"start, shared){gpu}; torch {torch.__version__}, Python {platform.python_version()}")


def print_header(title: str) -> None:
    print(f"\n## {title}\n\n{machine_info()}\ncommand: python {' '.join(sys.argv)}\n")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats shown as given (format them before)."""
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def run_train(out_dir: Path, args: Sequence[str], *, log: Path | None = None) -> tuple[float, list[dict[str, Any]]]:
    """``python train.py ARGS --output-dir OUT`` in a subprocess (fresh dir); returns (wall s, metrics).

    A fresh process per run: no allocator or RNG state is shared between the compared runs.
    """
    import shutil

    out_dir = Path(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)  # train.py refuses a directory with checkpoints
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(ROOT / "train.py"), *args, "--output-dir", str(out_dir)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(" ".join(cmd) + "\n\n" + proc.stdout + "\n" + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"train.py failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    return wall, read_metrics(out_dir)


def cifar_root(dest: Path | None = None) -> Path:
    """The CIFAR-10 JPEG image folder, extracted once from ../shared/data into bench/out (gitignored)."""
    dest = Path(dest) if dest else OUT
    root = dest / "cifar10-jpeg"
    marker = dest / ".cifar10-jpeg.extracted"
    if marker.is_file() and (root / "train").is_dir():
        return root
    if not CIFAR_TARBALL.is_file():
        raise FileNotFoundError(f"{CIFAR_TARBALL} not found: the CIFAR-10 benchmarks read the shared JPEG "
                                "tarball (or pass --cifar-root with train/<class>/ and test/<class>/)")
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(CIFAR_TARBALL) as tar:
        tar.extractall(dest, filter="data")
    marker.write_text("ok\n")
    return root
