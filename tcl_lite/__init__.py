"""tcl_lite: train image classifiers on noisy labels (TCL, MLNT, DivideMix, CE) on one small GPU or a CPU.

The one-call API: ``tcl_lite.find_label_issues(run_dir)`` (training samples ranked by how likely
their label is wrong) and ``tcl_lite.load_model(export_dir)`` (a model written by
``tcl-lite export-model``). Imported lazily, so ``import tcl_lite`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["find_label_issues", "load_model"]


def __getattr__(name: str) -> Any:
    """The public API, imported on first use (torch): ``import tcl_lite`` and the CLI stay light."""
    if name == "find_label_issues":
        from tcl_lite.results.label_issues import find_label_issues  # lazy public API (see the docstring)

        return find_label_issues
    if name == "load_model":
        from tcl_lite.inference.export_model import load_model  # lazy public API

        return load_model
    raise AttributeError(f"module 'tcl_lite' has no attribute {name!r}")
