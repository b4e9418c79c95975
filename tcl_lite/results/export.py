"""``python -m tcl_lite export RUN_DIR_OR_CHECKPOINT [--out DIR]``: a method's per-sample verdicts as files.

A method keeps per-sample verdicts when its class overrides ``per_sample_outputs`` (``methods/base.py``):
``clean_probability`` and, depending on the method, ``corrected_label`` (TCL), ``suggested_label``
or other columns. ``export`` writes ``clean_probability.csv`` with ``index``, ``given_label``, the
method's columns (label columns first, then scores) and, when the run knows them, ``true_label``;
and each column as ``NAME.npy``. Only safetensors, JSON and ``.npy`` (``allow_pickle=False``) are
read: nothing is unpickled, nothing is imported from the run.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tcl_lite.checkpoints import schema
from tcl_lite.checkpoints.finder import find_checkpoint
from tcl_lite.checkpoints.reader import checkpoint_method, read_method_state
from tcl_lite.errors import ConfigError, ExportError
from tcl_lite.methods import METHODS, Method, get_method  # importing the package registers the built-in methods

CSV_NAME = "clean_probability.csv"
_FIXED = ("index", "given_label", "true_label")  # columns export adds; a method's own may not take these names



@dataclass
class Verdicts:
    """A checkpoint's per-sample verdicts, one array per column, all of the run's training-set length."""

    checkpoint: Path
    method: str
    columns: dict[str, np.ndarray]  # index, given_label, the method's columns[, true_label]

    @property
    def method_columns(self) -> dict[str, np.ndarray]:
        return {k: v for k, v in self.columns.items() if k not in _FIXED}


def verdict_methods() -> list[str]:
    """Names of the registered methods that keep per-sample verdicts (override ``per_sample_outputs``)."""
    base = Method.per_sample_outputs.__func__
    return [name for name, cls in METHODS.items() if cls.per_sample_outputs.__func__ is not base]


def verdict_methods_text() -> str:
    """``method=tcl`` or ``method=tcl or method=dividemix``: what to train for per-sample verdicts."""
    names = verdict_methods()
    return " or ".join(f"`method={n}`" for n in names) if names else "a method that keeps them (none is registered)"


def _run_dir(ckpt: Path) -> Path:
    """``RUN/checkpoints/step_X`` -> ``RUN`` (where the labels and the config live)."""
    return ckpt.parent.parent


def _method_of(ckpt: Path) -> str:
    """The run's method (its config.yaml), else what the checkpoint records (``reader.checkpoint_method``)."""
    config = _run_dir(ckpt) / "config.yaml"
    if config.is_file():
        try:
            values = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise ExportError(f"{config} cannot be read as YAML ({str(e)[:200]})") from None
        return str(values.get("method", "unknown")) if isinstance(values, dict) else "unknown"
    return checkpoint_method(ckpt) or "unknown"


def _method_outputs(ckpt: Path, method: str, state: Any) -> dict[str, np.ndarray]:
    try:
        cls = get_method(method)
    except ConfigError:
        raise ExportError(f"{ckpt} is a checkpoint of method {method!r}, which is not registered in this process; "
                          f"import the module that registers it, or export a run of {verdict_methods_text()}") from None
    outputs = cls.per_sample_outputs(state) if isinstance(state, dict) else None
    if outputs is not None:
        return {str(k): np.asarray(v) for k, v in outputs.items()}
    if method in verdict_methods():
        raise ExportError(f"{ckpt}: its method state holds no per-sample verdicts of method {method!r} (a checkpoint "
                          "saved before the method's first verdict, or an incomplete one)")
    raise ExportError(f"{ckpt} is a checkpoint of method {method!r}, which keeps no per-sample verdicts (clean "
                      f"probabilities); export works on runs of {verdict_methods_text()}")


def _labels(path: Path, length: int | None = None) -> np.ndarray:
    try:
        return schema.read_labels(path, length=length)
    except schema.Invalid as e:
        raise ExportError(f"{path.parent}: {e}") from None


def read_verdicts(path: str | Path) -> Verdicts:
    """The verdicts of the checkpoint at ``path``, or of a run directory's newest valid one (``best``
    when no rolling checkpoint verifies), with the run's given (and true) labels."""
    ckpt = find_checkpoint(path, "newest-or-best", log=lambda msg: print(msg, file=sys.stderr))
    state = read_method_state(ckpt)
    method = _method_of(ckpt)
    outputs = _method_outputs(ckpt, method, state)
    run = _run_dir(ckpt)
    noisy_path, true_path = run / "noisy_labels.npy", run / "true_labels.npy"
    if not noisy_path.is_file():
        raise ExportError(f"{noisy_path} is missing: export needs the run directory the checkpoint was saved in "
                          "(RUN/checkpoints/NAME), which holds the given labels")
    given = _labels(noisy_path)
    for name, values in outputs.items():
        if name in _FIXED or values.ndim != 1 or len(values) != len(given):
            what = "is a name export writes itself" if name in _FIXED else f"has shape {values.shape}"
            raise ExportError(f"{ckpt}: the method's column {name!r} {what}; {noisy_path} has {len(given)} labels "
                              "(one value per training sample expected)")
    # Label columns (integers) first, then the scores: TCL's CSV keeps its column order.
    ordered = sorted(outputs.items(), key=lambda kv: kv[1].dtype.kind == "f")
    columns = {"index": np.arange(len(given)), "given_label": given, **dict(ordered)}
    if true_path.is_file():
        columns["true_label"] = _labels(true_path, len(given))
    return Verdicts(ckpt, method, columns)


def export(path: str | Path, out: str | Path | None = None) -> Path:
    """Write the files for the checkpoint at (or the newest under) ``path``; returns the folder."""
    verdicts = read_verdicts(path)
    out_dir = Path(out) if out else _run_dir(verdicts.checkpoint) / "export" / verdicts.checkpoint.name
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, values in verdicts.columns.items():  # float32 needs 9 significant digits to round-trip
        np.save(out_dir / f"{name}.npy", values)
    with open(out_dir / CSV_NAME, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(verdicts.columns)
        for row in zip(*verdicts.columns.values()):
            writer.writerow([format(float(v), ".9g") if isinstance(v, np.floating) else int(v) for v in row])
    return out_dir
