"""The one way to go from a path to a checkpoint folder that verifies.

``find_checkpoint(path, which)`` accepts a run directory (``RUN``), its ``RUN/checkpoints`` folder or a
checkpoint folder (``RUN/checkpoints/step_X``, ``RUN/checkpoints/best``, or one copied elsewhere) and
returns a checkpoint folder whose manifest matches its files (``reader.verify``):

* a checkpoint folder is returned as is (``which`` does not apply: it names itself);
* ``final``: the newest rolling checkpoint (``step_*``) that verifies; each newer corrupt one is
  reported through ``log`` and skipped;
* ``best``: ``checkpoints/best`` (kept only by runs with a validation split);
* ``auto``: ``best`` when the run kept one, else ``final``;
* ``newest-or-best``: ``final``, or ``best`` when no rolling checkpoint verifies.

Used by ``export`` and ``report`` (newest-or-best), ``predict``/``export-model``/``issues``
(``inference.run_loading.choose_checkpoint``), MLNT's ``mlnt.feature_checkpoint`` and ``--resume RUN``.
Nothing is found: ``NoCheckpointError``; a checkpoint that is there but broken: ``CheckpointError``
naming the file and the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tcl_lite.checkpoints.reader import diagnose, list_steps, newest_valid, verify
from tcl_lite.errors import NoCheckpointError

WHICH = ("final", "best", "auto", "newest-or-best")
# Any of these makes a folder a checkpoint (``verify`` then says what else is missing).
_MARKERS = ("manifest.json", "model.safetensors", "method.json", "trainer.json")



def is_checkpoint_folder(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in _MARKERS)


def checkpoints_root(path: str | Path) -> Path | None:
    """``RUN`` or ``RUN/checkpoints`` -> ``RUN/checkpoints``; None for anything else."""
    path = Path(path)
    if (path / "checkpoints").is_dir():
        return path / "checkpoints"
    if path.is_dir() and not is_checkpoint_folder(path) and (
            (path / "best").is_dir() or list_steps(path)):
        return path
    return None


def find_checkpoint(path: str | Path, which: str = "final", *, log: Callable[[str], None] | None = print,
                    manifest_optional: bool = False) -> Path:
    """The checkpoint folder ``which`` of ``path`` (see the module docstring), verified.

    ``log``: where warnings about skipped corrupt checkpoints go (None: nowhere).
    ``manifest_optional``: accept a checkpoint folder without ``manifest.json`` (weights put there by
    hand) as is; one with a manifest is still verified."""
    if which not in WHICH:
        raise ValueError(f"which={which!r}: use one of {', '.join(WHICH)}")
    path = Path(path)
    if is_checkpoint_folder(path):
        bare = not (path / "manifest.json").is_file() and (path / "model.safetensors").is_file()
        if not (manifest_optional and bare):
            verify(path)
        return path
    root = checkpoints_root(path)
    if root is None:
        expected = ("a run directory (with checkpoints/), its checkpoints/ folder or a checkpoint folder (with "
                    "model.safetensors)")
        if not path.exists():
            raise NoCheckpointError(f"{path} does not exist: expected {expected}")
        raise NoCheckpointError(f"{path} holds no checkpoint: expected {expected}")
    best = root / "best"
    if which == "auto":
        which = "best" if is_checkpoint_folder(best) else "final"
    if which == "best":
        return _best(best)
    newest = newest_valid(root, log or (lambda msg: None))
    if newest is not None:
        return newest
    if which == "newest-or-best" and is_checkpoint_folder(best):
        return _best(best)
    raise NoCheckpointError(_nothing_valid(root, also_best=which == "newest-or-best"))


def _best(best: Path) -> Path:
    if not is_checkpoint_folder(best):
        raise NoCheckpointError(f"{best} does not exist: the run kept no `best` checkpoint (it needs a validation "
                                "split, data.val_fraction); use the final one (--checkpoint final)")
    verify(best)
    return best


def _nothing_valid(root: Path, also_best: bool) -> str:
    diagnosis = diagnose(root)
    if not diagnosis:
        return (f"{root} holds no valid checkpoint yet{' (and no best/)' if also_best else ''}: train (or resume) "
                "the run until it saves one")
    lines = "\n".join(f"  {p.name}: {why}" for p, why in diagnosis)
    return f"{root} holds checkpoints but none is usable{' (and no best/)' if also_best else ''}:\n{lines}"
