"""Renames a crash interrupted, completed or rolled back when the run directory is next opened.

A checkpoint is written as ``checkpoints/.tmp-NAME`` and renamed to ``NAME``; re-saving a name that
exists (``best``) first moves the old one to ``.old-NAME``. A kill between those steps leaves:

- ``.tmp-NAME`` complete (its manifest verifies) and no ``NAME``: the rename is completed;
- ``.tmp-NAME`` incomplete: removed (a save that never finished; ``NAME`` or ``.old-NAME`` is intact);
- ``.old-NAME`` and no ``NAME``: renamed back (rolled back);
- ``.old-NAME`` beside ``NAME``: removed (the swap had finished);
- ``.del-NAME``: removed (a checkpoint beyond ``checkpoint.keep_last`` is renamed so before it is deleted).

Small files written through a temporary name (``.tmp-*`` / ``.*.tmp`` at the top of the run
directory: the data fingerprint, status.json, parent.json) are removed: the start writes them again.
Each action is one line in ``train.log``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from tcl_lite.checkpoints import reader
from tcl_lite.errors import CheckpointError
from tcl_lite.runlog.run_log import append_line


def recover(out: Path, echo: Callable[[str], None]) -> list[str]:
    """Complete or roll back the interrupted renames under ``out``; returns what was done (also logged)."""
    done: list[str] = []
    root = out / "checkpoints"
    if root.is_dir():
        for tmp in sorted(root.glob(".tmp-*")):
            done.append(_finish_save(root, tmp))
        for doomed in sorted(root.glob(".del-*")):
            shutil.rmtree(doomed, ignore_errors=True)
            done.append(f"removed {doomed.name}, an old checkpoint whose pruning (keep_last) was interrupted")
        for old in sorted(root.glob(".old-*")):
            final = root / old.name.removeprefix(".old-")
            if final.exists():
                shutil.rmtree(old, ignore_errors=True)
                done.append(f"removed {old.name}: the checkpoint that replaced it, {final.name}, is complete")
            else:
                os.replace(old, final)
                done.append(f"restored {final.name} from {old.name} (its replacement never completed)")
    if out.is_dir():
        for tmp in sorted([*out.glob(".tmp-*"), *out.glob(".*.tmp")]):
            if tmp.is_file():
                tmp.unlink()
                done.append(f"removed {tmp.name}, a file whose write was interrupted (written again now)")
    for line in done:
        text = f"interrupted rename in {out}: {line}"
        echo(text)
        append_line(out / "train.log", text)
    return done


def _finish_save(root: Path, tmp: Path) -> str:
    name = tmp.name.removeprefix(".tmp-")
    final, old = root / name, root / f".old-{name}"
    complete = True
    try:
        reader.verify(tmp)
    except CheckpointError:
        complete = False
    if complete and not final.exists():
        os.replace(tmp, final)
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)
        return f"completed the save of {name} (it had been written in full)"
    shutil.rmtree(tmp, ignore_errors=True)
    if not final.exists() and old.exists():
        os.replace(old, final)
        return f"removed the unfinished save {tmp.name} and restored {name} from {old.name}"
    return f"removed the unfinished save {tmp.name}" + ("" if complete else " (it had not been written in full)")
