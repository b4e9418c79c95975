"""The data side of ``tcl-lite audit FOLDER`` (the command is ``tcl_lite/cli/audit.py``).

FOLDER is ``<class>/<image>`` (the folder names are the labels) or a dataset root with ``train/``
(and optionally ``val/``, ``test/``). A short cross-entropy run suited to the folder's size trains in
``--out`` (default ``runs/audit-<folder name>``), then the training images are ranked by how likely
their label is wrong (``find_label_issues``) and the CSV and gallery are written to ``OUT/issues/``.
Running it again continues (or reuses) the same run.
"""

from __future__ import annotations

import os
from pathlib import Path

from tcl_lite.data.datasets import IMAGE_EXTENSIONS, _images_under
from tcl_lite.errors import DataError


def check_folder(folder: Path) -> int:
    """Before anything is created: ``folder`` is ``<class>/<image>`` (or ``train/<class>/<image>``) with at
    least two classes and no class folder without images; returns the number of training images. Errors
    name the folder as the user gave it."""
    layout = (f"expected {folder}/<class>/<image> (the folder names are the labels; {', '.join(IMAGE_EXTENSIONS)}) "
              f"or {folder}/train/<class>/<image>")
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder; {layout}")
    base = folder / "train" if (folder / "train").is_dir() else folder
    classes = sorted(e.name for e in os.scandir(base) if e.is_dir())
    if not classes:
        loose = len(_images_under(base))
        where = f" ({loose} image{'s lie' if loose != 1 else ' lies'} directly in it)" if loose else ""
        raise DataError(f"{base} has no class folders{where}; {layout}")
    counts = {name: len(_images_under(base / name)) for name in classes}
    empty = [name for name, n in counts.items() if n == 0]
    if empty:
        raise DataError(f"class folder{'s' * (len(empty) > 1)} {', '.join(str(base / n) for n in empty[:5])} "
                        f"hold{'s' * (len(empty) == 1)} no images ({', '.join(IMAGE_EXTENSIONS)}); add images or "
                        "remove the folder")
    if len(classes) < 2:
        raise DataError(f"{base} has one class folder ({classes[0]}); label checking needs at least two classes; "
                        f"{layout}")
    return sum(counts.values())


def dataset_root(folder: Path, out: Path) -> Path:
    """A root with ``train/``: FOLDER itself, or ``OUT/audit_data`` whose ``train`` links to FOLDER (created
    here: call ``check_folder`` first)."""
    if (folder / "train").is_dir():
        return folder
    root = out / "audit_data"
    root.mkdir(parents=True, exist_ok=True)
    link = root / "train"
    if not link.exists():
        link.symlink_to(folder.resolve(), target_is_directory=True)
    return root
