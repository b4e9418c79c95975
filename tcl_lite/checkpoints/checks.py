"""What makes a checkpoint folder usable, beyond matching checksums: the files its manifest must list,
and the schema (``schema.py``) of each file it lists.

A manifest that lists fewer files than a checkpoint needs (an interrupted copy, a hand-edited
folder), a JSON file that does not parse, a tree that does not fit its schema or counters that cannot
be true make the checkpoint invalid, so resuming falls back to the previous one instead of failing
half-way through a load.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tcl_lite.checkpoints import schema
from tcl_lite.checkpoints.schema import Invalid

STEP_DIR = re.compile(r"^step_(\d{8})$")

# Every checkpoint has these; a resumable one (``step_*``, or any with an optimizer) also needs the
# optimizer state and one RNG file per process, and every JSON file that references tensors needs
# its ``.safetensors`` sibling.
WEIGHTS_FILES = ("model.safetensors", "method.json", "trainer.json")
RESUMABLE_FILES = ("optimizer.json",)

# The files a checkpoint may list, by name, and the schema each is read with (``.safetensors``
# siblings of a tree are checked with their JSON). A listed file of another name is not read by
# anything (a file added by hand); it only has to match its checksum.
_WEIGHTS = re.compile(r"model(\.[A-Za-z0-9_\-]+)?\.safetensors")
_OPTIMIZER = re.compile(r"(optimizer(\.[A-Za-z0-9_\-]+)?)\.json")
_RNG = re.compile(r"(rng_rank(\d+))\.json")


class InvalidCheckpoint(Invalid):
    """One reason a checkpoint cannot be used (the caller adds the path)."""


def required_files(path: Path, manifest: dict[str, str], trainer: Any) -> set[str]:
    """The files a checkpoint of this kind must list in its manifest."""
    need = set(WEIGHTS_FILES)
    if STEP_DIR.match(path.name) or "optimizer.json" in manifest:
        need.update(RESUMABLE_FILES)
        processes = trainer.get("num_processes", 1) if isinstance(trainer, dict) else 1
        if isinstance(processes, int) and 1 <= processes <= 4096:
            need.update(f"rng_rank{r}.json" for r in range(processes))
    return need


def check_files(path: Path, manifest: dict[str, str]) -> dict[str, Any]:
    """Every listed file against its schema, trainer.json first; returns trainer.json's content.
    Raises Invalid naming the file and the field."""
    trainer = schema.read_json(path / "trainer.json") if "trainer.json" in manifest else None
    unlisted = sorted(required_files(path, manifest, trainer) - set(manifest))
    if unlisted:
        raise InvalidCheckpoint(f"manifest.json does not list {', '.join(unlisted)}, which this kind of "
                                "checkpoint needs (an incomplete save or copy)")
    check_trainer(path, trainer)
    trees = sorted(m.group(1) for name in manifest if (m := _OPTIMIZER.fullmatch(name)))
    if "format" in trainer and trees and sorted(trainer.get("optimizer_states", {})) != trees:
        raise InvalidCheckpoint(f"trainer.json: optimizer_states={trainer.get('optimizer_states')!r} does not name "
                                f"the optimizer files {', '.join(trees)}")
    processes = trainer.get("num_processes", 1)
    rng = None
    for name in sorted(manifest):
        if _WEIGHTS.fullmatch(name):
            schema.safetensors_header(path / name)
        elif m := _OPTIMIZER.fullmatch(name):
            schema.read_tree(path, m.group(1), schema.OPTIMIZER)
        elif name == "method.json":
            schema.read_tree(path, "method", schema.METHOD_STATE)
        elif m := _RNG.fullmatch(name):
            if int(m.group(2)) >= processes:
                raise InvalidCheckpoint(f"manifest.json lists {name}, but trainer.json has num_processes={processes}")
            rng = rng or schema.rng_schema()
            schema.read_tree(path, m.group(1), rng)
        elif name.endswith(".safetensors") and (name[: -len(".safetensors")] + ".json") in manifest:
            continue  # read with its JSON file above
        elif name.endswith(".json") and name != "trainer.json":
            schema.read_json(path / name)
    for name in manifest:  # a tree's tensors need their file listed, or a copy could drop it unnoticed
        if name.endswith(".json") and (path / (name[: -5] + ".safetensors")).is_file() and \
                name[: -5] + ".safetensors" not in manifest:
            raise InvalidCheckpoint(f"manifest.json does not list {name[:-5]}.safetensors, which {name} needs")
    return trainer


def check_trainer(path: Path, trainer: Any) -> None:
    """trainer.json against its schema (the current one, or the one before ``format`` was recorded) and
    the folder's name (``step_N`` holds global step N)."""
    is_current = isinstance(trainer, dict) and "format" in trainer
    (schema.TRAINER if is_current else schema.TRAINER_LEGACY).check(trainer, "trainer.json")
    if is_current:
        schema.check_settings(trainer["settings"])
    m = STEP_DIR.match(path.name)
    if m and int(m.group(1)) != trainer["global_step"]:
        raise InvalidCheckpoint(f"trainer.json: global_step={trainer['global_step']} but the folder is {path.name}")


def check_fits_data(trainer: dict[str, Any], steps_per_epoch: int) -> None:
    """The position inside the epoch exists in this data (the data length decides the epoch's steps)."""
    if trainer.get("step_in_epoch", 0) >= steps_per_epoch:
        raise InvalidCheckpoint(f"trainer.json: step_in_epoch={trainer['step_in_epoch']} but an epoch of this "
                                f"data has {steps_per_epoch} steps (data length / global batch)")
