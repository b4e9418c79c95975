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


def dataset_root(folder: Path, out: Path) -> Path:
    """A root with ``train/``: FOLDER itself, or ``OUT/audit_data`` whose ``train`` links to FOLDER."""
    if (folder / "train").is_dir():
        return folder
    if not folder.is_dir() or not any(e.is_dir() for e in os.scandir(folder)):
        raise DataError(f"{folder} is not a folder of class folders: expected {folder}/<class>/<image> (the folder "
                        f"names are the labels; {', '.join(IMAGE_EXTENSIONS)}) or {folder}/train/<class>/<image>")
    root = out / "audit_data"
    root.mkdir(parents=True, exist_ok=True)
    link = root / "train"
    if not link.exists():
        link.symlink_to(folder.resolve(), target_is_directory=True)
    return root



def count_images(root: Path) -> int:
    """The images under ``root/train`` (the audit's training set)."""
    return len(_images_under(root / "train"))
