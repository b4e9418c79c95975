"""``OUTPUT/metrics.jsonl``: one JSON object per evaluation (epoch, step, test_acc, ...)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tcl_lite.errors import RunError


class MetricsLog:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(strict_json(record), allow_nan=False) + "\n")

    def truncate_after(self, step: int) -> None:
        """On resume, drop records written after the checkpoint (they will be written again). A line that
        is not a record (a damaged file) is kept as it is: it is not this run's to remove."""
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            record = _record(line)
            if line.strip() and (record is None or not isinstance(record.get("step", 0), int)
                                 or record.get("step", 0) <= step):
                kept.append(line)
        self.path.write_text("".join(line + "\n" for line in kept))


def _record(line: str) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def strict_json(value: Any) -> Any:
    """NaN/inf (not JSON: other readers reject them) -> null, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every record of a metrics.jsonl; a RunError naming the file and line for one that is not a JSON object."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise RunError(f"{path} cannot be read as text ({e}): it should hold one JSON object per line") from None
    records = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            record = _record(line)
            if record is None:
                raise RunError(f"{path}:{n}: not a JSON object ({line[:60]!r}); the file is damaged: restore it, "
                               "or remove that line")
            records.append(record)
    return records
