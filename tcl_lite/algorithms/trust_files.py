"""The run directory's trust files: ``trust.json`` (diagnostics, verdict, reasons) and
``trust_samples.safetensors`` (per training sample: suggestion, confidence and its parts).

Written by the engine after each diagnosed detection and at the end of training (replacing the previous
ones, atomically); read by the report, label issues, export and the commands that print a verdict. The
per-sample arrays belong to one checkpoint (``checkpoint`` in trust.json): the one whose method state
holds the verdicts they were computed from. Only JSON and safetensors: nothing is unpickled.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tcl_lite.algorithms.trust import APPLY_THRESHOLD, DOUBTFUL, TRUSTWORTHY, SampleTrust, Verdict, applied

TRUST_JSON = "trust.json"
TRUST_SAMPLES = "trust_samples.safetensors"
VERSION = 1


@dataclass
class TrustRecord:
    """What trust.json holds (``samples`` loaded on demand)."""

    run_dir: Path
    verdict: Verdict
    checkpoint: str  # the checkpoint folder name the per-sample arrays belong to ("" when none)
    threshold: float = APPLY_THRESHOLD
    diagnostics: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # the rest of the file (epoch, method, state, ...)

    @property
    def level(self) -> str:
        return self.verdict.level

    def samples(self) -> dict[str, np.ndarray] | None:
        """The per-sample arrays, or None when the run has none."""
        path = self.run_dir / TRUST_SAMPLES
        if not path.is_file():
            return None
        from safetensors.numpy import load_file

        return load_file(str(path))

    def samples_for(self, checkpoint: str | Path) -> dict[str, np.ndarray] | None:
        """The per-sample arrays when they belong to ``checkpoint`` (a folder path or name), else None."""
        return self.samples() if self.checkpoint and Path(checkpoint).name == self.checkpoint else None

    def applied(self, confidence: np.ndarray) -> np.ndarray:
        return applied(confidence, self.level, self.threshold)


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)  # readers never see half a file


def _finite(value: Any) -> Any:
    """NaN/inf (not JSON) -> null, recursively; numpy scalars -> Python numbers."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def save_trust(run_dir: str | Path, record: dict[str, Any], samples: SampleTrust | None) -> None:
    """Write trust.json (``record``: verdict, reasons, evidence, diagnostics, checkpoint, ...) and, when
    given, the per-sample arrays; a record without samples removes stale ones."""
    run_dir = Path(run_dir)
    if samples is not None:
        from safetensors.numpy import save_file

        arrays = {k: np.ascontiguousarray(v) for k, v in samples.arrays().items()}
        _atomic_write(run_dir / TRUST_SAMPLES, lambda p: save_file(arrays, str(p)))
    elif not record.get("checkpoint"):
        (run_dir / TRUST_SAMPLES).unlink(missing_ok=True)
    text = json.dumps(_finite({"version": VERSION, **record}), indent=1, allow_nan=False) + "\n"
    _atomic_write(run_dir / TRUST_JSON, lambda p: p.write_text(text))


def load_trust(run_dir: str | Path) -> TrustRecord | None:
    """The run's trust record, or None when it has none (trained before trust diagnostics existed)."""
    run_dir = Path(run_dir)
    try:
        d = json.loads((run_dir / TRUST_JSON).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    verdict = Verdict(str(d.get("verdict", DOUBTFUL)), list(d.get("reasons", [])), list(d.get("evidence", [])))
    return TrustRecord(run_dir, verdict, str(d.get("checkpoint") or ""), float(d.get("threshold", APPLY_THRESHOLD)),
                       dict(d.get("diagnostics") or {}), d)


def missing_verdict() -> Verdict:
    """The verdict of a run without trust.json (trained by an earlier version of tcl_lite)."""
    return Verdict(DOUBTFUL, ["the run has no trust diagnostics (trained by an earlier version of tcl_lite, or "
                              "stopped before its first check): its corrections were never checked"])


def is_trustworthy(record: TrustRecord | None) -> bool:
    return record is not None and record.level == TRUSTWORTHY


def confidence_for(record: TrustRecord | None, checkpoint: str | Path, suggested: np.ndarray, *,
                   force: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
    """``(confidence, applied)`` per training sample (dataset order) for the verdicts of ``checkpoint``, whose
    suggestions are ``suggested``; None when the run's per-sample trust belongs to another checkpoint (or it
    has none). A row whose suggestion is not the one its confidence was computed for gets NaN, never applied.
    ``force``: apply by the threshold whatever the verdict (a doubtful run's file written on request)."""
    arrays = record.samples_for(checkpoint) if record is not None else None
    if arrays is None or len(arrays["confidence"]) != len(suggested):
        return None
    same = arrays["suggested"] == np.asarray(suggested)
    confidence = np.where(same, arrays["confidence"], np.nan).astype(np.float32)
    level = TRUSTWORTHY if force else record.level
    return confidence, applied(np.nan_to_num(confidence, nan=0.0), level, record.threshold) & same
