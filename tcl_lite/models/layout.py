"""Model-layout versions: which network an architecture name stood for when a checkpoint was written.

Checkpoints record ``model_arch`` and ``model_layout`` in ``trainer.json``. An architecture whose
meaning changes gets a new layout version here, so that weights of the earlier network are never
loaded into (or silently mistaken for) the new one. Checkpoints written before these records
existed are layout 1 of whatever ``model.arch`` the run used.
"""

from __future__ import annotations

import json
from pathlib import Path

from tcl_lite.errors import ModelError

# arch -> current layout version; an arch not listed has never changed (version 1).
LAYOUT_VERSIONS = {"preact_resnet18": 2}

# (arch, old version) -> (what changed, the arch that now builds the old network)
LAYOUT_CHANGES = {
    ("preact_resnet18", 1): (
        "model.arch=preact_resnet18 is now the TCL reference's own PreAct ResNet-18 (a BatchNorm + ReLU in "
        "the stem, and each block's identity branch carries the pre-activated tensor); the checkpoint holds "
        "the earlier preact_resnet18, He et al.'s form, whose weights do not fit the new network",
        "preact_resnet18_he"),
}


class ModelLayoutError(ModelError):
    """A checkpoint written for another network than the configured ``model.arch`` builds now."""


def model_layout(arch: str) -> int:
    """The layout version ``model.arch=arch`` builds now."""
    return LAYOUT_VERSIONS.get(arch, 1)


def layout_record(arch: str) -> dict[str, str | int]:
    """What a checkpoint records about its network (merged into ``trainer.json``)."""
    return {"model_arch": arch, "model_layout": model_layout(arch)}


def check_checkpoint_layout(checkpoint: str | Path, arch: str) -> None:
    """Raise ModelLayoutError unless ``checkpoint`` (a folder with ``trainer.json``) was written for
    the network ``model.arch=arch`` builds now. Reads one small JSON file; changes nothing."""
    info_path = Path(checkpoint) / "trainer.json"
    if not info_path.is_file():  # a bare weights folder: nothing recorded, the weights' keys decide
        return
    try:
        info = json.loads(info_path.read_text())
    except (OSError, json.JSONDecodeError):
        return  # the manifest check reports a damaged file
    saved_arch, saved = info.get("model_arch"), int(info.get("model_layout", 1))
    if saved_arch is not None and saved_arch != arch:
        raise ModelLayoutError(
            f"{checkpoint} was written with model.arch={saved_arch}, but this run builds model.arch={arch}. "
            f"Fix: resume with model.arch={saved_arch} (the run's own config.yaml), or start a new run in "
            "another --output-dir.")
    if saved == model_layout(arch):
        return
    head = (f"{checkpoint} holds model layout {saved} of {arch}, this version of tcl_lite builds layout "
            f"{model_layout(arch)}")
    if (arch, saved) not in LAYOUT_CHANGES:  # e.g. written by a newer tcl_lite
        raise ModelLayoutError(f"{head}. Fix: resume with the tcl_lite version that wrote it, or start a new "
                               "run in another --output-dir. Nothing was changed in the run directory.")
    what, old_arch = LAYOUT_CHANGES[(arch, saved)]
    raise ModelLayoutError(
        f"{head}: {what}. Fix: resume with model.arch={old_arch} added to the command (it builds the network "
        "the checkpoint was trained with), or start a new run in another --output-dir. Nothing was changed "
        "in the run directory.")
