"""Forking a run: continuing a checkpoint of run A in another directory B, leaving A as it is.

``--resume A`` (or ``--resume A/checkpoints/step_N``) ``--output-dir B`` with B not A is a fork. B must
be empty (or not exist): a directory holding anything is refused unless ``--restart``, which moves
its files aside first. The fork copies into B what continuing needs of A (its config, data
fingerprint, labels, data info, metrics up to the checkpoint, the checkpoint restored and the
``best`` one it knows of) and records where it came from in ``B/parent.json`` (A's path, the
checkpoint, the SHA-256 of its manifest, its global step). A is only read.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from tcl_lite.checkpoints import reader, schema
from tcl_lite.checkpoints.finder import is_checkpoint_folder
from tcl_lite.engine.run_lock import LOCK_NAME
from tcl_lite.errors import CheckpointError

PARENT = "parent.json"
# What B takes from A besides the checkpoint (each written again by B's start, with the same content).
RUN_FILES = ("config.yaml", "data_fingerprint.json", "noisy_labels.npy", "true_labels.npy", "data.json",
             "metrics.jsonl")


def run_dir_of(checkpoint: Path) -> Path | None:
    """The run directory a checkpoint folder belongs to (``RUN/checkpoints/NAME``), or None (a copy elsewhere)."""
    parent = checkpoint.parent
    return parent.parent if parent.name == "checkpoints" else None


def same_dir(a: Path | None, b: Path) -> bool:
    return a is not None and a.resolve() == b.resolve()


def refuse_busy_target(out: Path, source: Path | None, restart: bool) -> None:
    """A fork continues in an empty directory only (``--restart``: its files are moved aside first)."""
    if restart or not out.is_dir():
        return
    held = sorted(e.name for e in out.iterdir() if e.name != LOCK_NAME)
    if held:
        raise CheckpointError(
            f"{out} is not empty ({', '.join(held[:4])}{', ...' if len(held) > 4 else ''}), so the checkpoint of "
            f"{source or 'another run'} is not continued there (that would mix two runs). Choose an empty or new "
            f"--output-dir, or add --restart to move {out}'s files to {out}/previous-<time>/ first (nothing is "
            "deleted)")


def fork(out: Path, checkpoint: Path, log: Any) -> None:
    """Copy what continuing ``checkpoint`` needs into the (empty) run directory ``out``; record the parent."""
    source = run_dir_of(checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    if source is not None:
        for name in RUN_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, out / name)
    dest = out / "checkpoints"
    _copy_checkpoint(checkpoint, dest)
    trainer = json.loads((checkpoint / "trainer.json").read_text())
    best = checkpoint.parent / "best"
    if trainer.get("best_step", -1) >= 0 and checkpoint.name != "best" and is_checkpoint_folder(best):
        try:
            if json.loads((best / "trainer.json").read_text()).get("global_step") == trainer["best_step"]:
                reader.verify(best)
                _copy_checkpoint(best, dest)
        except (OSError, ValueError, CheckpointError) as e:
            log(f"WARNING: not copying {best} ({e}); the fork keeps no best checkpoint until it finds one")
    record = {"run_dir": str(source.resolve()) if source else "", "checkpoint": str(checkpoint.resolve()),
              "checkpoint_name": checkpoint.name, "manifest_sha256": reader.sha256(checkpoint / "manifest.json"),
              "global_step": int(trainer["global_step"]), "forked_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    schema.PARENT.check(record, PARENT)
    tmp = out / f".tmp-{PARENT}"
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, out / PARENT)
    log(f"forked {checkpoint} (global step {record['global_step']}) into {out}; the parent is recorded in "
        f"{out / PARENT} and {source or checkpoint} was only read")


def _copy_checkpoint(checkpoint: Path, dest: Path) -> None:
    """Copy a checkpoint folder atomically (``.tmp-NAME`` then a rename) and verify the copy."""
    dest.mkdir(parents=True, exist_ok=True)
    tmp, final = dest / f".tmp-{checkpoint.name}", dest / checkpoint.name
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(checkpoint, tmp)
        reader.verify(tmp)
    except (OSError, CheckpointError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"cannot copy {checkpoint} into {dest} ({e}); the source may have changed "
                              "meanwhile (is its run still training?): try again") from None
    os.replace(tmp, final)


def read_parent(run_dir: Path) -> dict[str, Any] | None:
    """``run_dir/parent.json`` (checked), or None for a run that is not a fork."""
    path = run_dir / PARENT
    if not path.is_file():
        return None
    try:
        return schema.read_checked(path, schema.PARENT)
    except schema.Invalid as e:
        raise CheckpointError(f"{run_dir}: {e}") from None
