"""What makes a checkpoint folder usable, beyond matching checksums.

A manifest that lists fewer files than a checkpoint needs (an interrupted copy, a hand-edited
folder), a JSON file that does not parse, or counters that cannot be true (a negative step gives
checkpoint names that are never pruned) make the checkpoint invalid, so resuming falls back to the
previous one instead of failing half-way through a load.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

STEP_DIR = re.compile(r"^step_(\d{8})$")

# Every checkpoint has these; a resumable one (``step_*``, or any with an optimizer) also needs the
# optimizer state and one RNG file per process, and every JSON file that references tensors needs
# its ``.safetensors`` sibling.
WEIGHTS_FILES = ("model.safetensors", "method.json", "trainer.json")
RESUMABLE_FILES = ("optimizer.json",)

_COUNTERS = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "num_processes": 1, "best_step": -1}


class InvalidCheckpoint(ValueError):
    """One reason a checkpoint cannot be used (the caller adds the path)."""


def parse_json_files(path: Path, manifest: dict[str, str]) -> dict[str, Any]:
    """Every listed ``.json`` file parsed, or InvalidCheckpoint naming the one that does not parse."""
    parsed = {}
    for name in manifest:
        if name.endswith(".json"):
            try:
                parsed[name] = json.loads((path / name).read_text())
            except (ValueError, UnicodeDecodeError) as e:
                raise InvalidCheckpoint(f"{name} is not valid JSON ({e})") from None
            except OSError as e:
                raise InvalidCheckpoint(f"{name} cannot be read ({e.strerror or e})") from None
    return parsed


def _references_tensors(obj: Any) -> bool:
    if isinstance(obj, dict):
        return "__tensor__" in obj or any(_references_tensors(v) for v in obj.values())
    if isinstance(obj, list):
        return any(_references_tensors(v) for v in obj)
    return False


def required_files(path: Path, manifest: dict[str, str], parsed: dict[str, Any]) -> set[str]:
    """The files a checkpoint of this kind must list in its manifest."""
    need = set(WEIGHTS_FILES)
    if STEP_DIR.match(path.name) or "optimizer.json" in manifest:
        need.update(RESUMABLE_FILES)
        trainer = parsed.get("trainer.json")
        processes = trainer.get("num_processes", 1) if isinstance(trainer, dict) else 1
        if isinstance(processes, int) and 1 <= processes <= 4096:
            need.update(f"rng_rank{r}.json" for r in range(processes))
    for name, obj in parsed.items():
        if _references_tensors(obj):
            need.add(name[: -len(".json")] + ".safetensors")
    return need


def check_counters(path: Path, trainer: Any) -> None:
    """trainer.json's counters are integers in range and agree with each other and the folder name."""
    if not isinstance(trainer, dict):
        raise InvalidCheckpoint("trainer.json does not hold a mapping of counters")
    values = {}
    for key, low in _COUNTERS.items():
        v = trainer.get(key, low)
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise InvalidCheckpoint(f"trainer.json: {key}={v!r} is not an integer >= {low}")
        values[key] = v
    if values["step_in_epoch"] > values["global_step"] or values["epoch"] > values["global_step"]:
        raise InvalidCheckpoint(f"trainer.json: epoch={values['epoch']}, step_in_epoch={values['step_in_epoch']} "
                                f"do not fit global_step={values['global_step']} (every epoch has a step)")
    best = trainer.get("best_value")
    if best is not None and (isinstance(best, bool) or not isinstance(best, (int, float))):
        raise InvalidCheckpoint(f"trainer.json: best_value={best!r} is not a number")
    m = STEP_DIR.match(path.name)
    if m and int(m.group(1)) != values["global_step"]:
        raise InvalidCheckpoint(f"trainer.json: global_step={values['global_step']} but the folder is "
                                f"{path.name}")


def check_fits_data(trainer: dict[str, Any], steps_per_epoch: int) -> None:
    """The position inside the epoch exists in this data (the data length decides the epoch's steps)."""
    if trainer.get("step_in_epoch", 0) >= steps_per_epoch:
        raise InvalidCheckpoint(f"trainer.json: step_in_epoch={trainer['step_in_epoch']} but an epoch of this "
                                f"data has {steps_per_epoch} steps (data length / global batch)")
