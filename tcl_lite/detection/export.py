"""``python -m tcl_lite export RUN_DIR_OR_CHECKPOINT [--out DIR]``: TCL's per-sample verdicts as files.

Writes ``clean_probability.csv`` (index, given_label, corrected_label, clean_probability and, when
the run knows them, true_label) and the same columns as ``.npy`` files. Only safetensors, JSON and
``.npy`` (``allow_pickle=False``) are read: nothing is unpickled, nothing is imported from the run.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from tcl_lite.engine.checkpoint import CheckpointError, CheckpointManager
from tcl_lite.engine.state_io import load_tree


class ExportError(RuntimeError):
    """A path that holds no exportable TCL state; the message says what to pass instead."""


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory -> its newest valid checkpoint; a checkpoint directory -> itself."""
    path = Path(path)
    if (path / "checkpoints").is_dir():
        steps = CheckpointManager(None, path / "checkpoints", keep_last=1)
        found = steps.newest_valid(lambda msg: print(msg, file=sys.stderr))
        if found is None:
            best = path / "checkpoints" / "best"
            if (best / "method.json").is_file():
                return best
            raise ExportError(f"{path}/checkpoints holds no valid checkpoint")
        return found
    if (path / "method.json").is_file():
        return path
    raise ExportError(f"{path} is neither a run directory (with checkpoints/) nor a checkpoint "
                      "(with method.json)")


def _run_dir(ckpt: Path) -> Path:
    """``RUN/checkpoints/step_X`` -> ``RUN`` (where the labels and the config live)."""
    return ckpt.parent.parent


def _method_of(ckpt: Path) -> str:
    config = _run_dir(ckpt) / "config.yaml"
    if config.is_file():
        import yaml

        return str((yaml.safe_load(config.read_text()) or {}).get("method", "unknown"))
    return "unknown"


def export(path: str | Path, out: str | Path | None = None) -> Path:
    """Write the files for the checkpoint at (or the newest under) ``path``; returns the folder."""
    ckpt = resolve_checkpoint(path)
    state = load_tree(ckpt, "method")
    if not isinstance(state, dict) or state.get("method") != "tcl" or "clean_probability" not in state:
        method = state.get("method") if isinstance(state, dict) and state.get("method") else _method_of(ckpt)
        raise ExportError(f"{ckpt} is a checkpoint of method {method!r}, which keeps no clean probabilities; "
                          "export works on TCL runs (method=tcl)")
    w = state["clean_probability"].float().numpy()
    corrected = state["corrected_label"].long().numpy()
    run = _run_dir(ckpt)
    noisy_path, true_path = run / "noisy_labels.npy", run / "true_labels.npy"
    if not noisy_path.is_file():
        raise ExportError(f"{noisy_path} is missing: export needs the run directory the checkpoint was saved in "
                          "(RUN/checkpoints/NAME), which holds the given labels")
    given = np.load(noisy_path, allow_pickle=False)
    true = np.load(true_path, allow_pickle=False) if true_path.is_file() else None
    if len(given) != len(w):
        raise ExportError(f"{noisy_path} has {len(given)} labels but the checkpoint {len(w)} samples")

    out_dir = Path(out) if out else run / "export" / ckpt.name
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = {"index": np.arange(len(w)), "given_label": given, "corrected_label": corrected,
               "clean_probability": w}
    if true is not None:
        columns["true_label"] = true
    for name, values in columns.items():  # float32 needs 9 significant digits to round-trip
        np.save(out_dir / f"{name}.npy", values)
    with open(out_dir / "clean_probability.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in zip(*columns.values()):
            writer.writerow([format(float(v), ".9g") if isinstance(v, np.floating) else int(v) for v in row])
    return out_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tcl_lite export",
                                description="Export TCL's clean probability and corrected label per training sample.")
    p.add_argument("path", help="run directory (its newest valid checkpoint) or a checkpoint directory")
    p.add_argument("--out", help="output folder (default: RUN/export/CHECKPOINT_NAME)")
    args = p.parse_args(argv)
    try:
        out = export(args.path, args.out)
    except (ExportError, CheckpointError) as e:
        print(f"tcl_lite export: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out / 'clean_probability.csv'} and the .npy columns")
    return 0
