"""tcl_lite: train image classifiers on noisy labels (TCL, MLNT, DivideMix, ProMix, CE) on one small GPU or a CPU.

The one-call API: ``tcl_lite.load_config(path, overrides)`` (a checked ``Config``, with every built-in
method, architecture and dataset registered), ``tcl_lite.find_label_issues(run_dir)`` (training samples
ranked by how likely their label is wrong) and ``tcl_lite.load_model(export_dir)`` (a model written by
``tcl-lite export-model``). Imported lazily, so ``import tcl_lite`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["find_label_issues", "load_config", "load_model", "register_builtins"]

#: the modules whose import registers the built-in methods, architectures, datasets, views and config
#: checks (none of them imports torch)
BUILTINS = ("tcl_lite.methods", "tcl_lite.models", "tcl_lite.data", "tcl_lite.runlog.trackers")


def register_builtins() -> None:
    """Register every built-in method, architecture, dataset, view and config check (no torch imported)."""
    for module in BUILTINS:
        importlib.import_module(module)


def __getattr__(name: str) -> Any:
    """The public API, imported on first use (torch): ``import tcl_lite`` and the CLI stay light."""
    if name == "load_config":
        register_builtins()  # what the config loader checks names against (tcl_lite.registry)
        from tcl_lite.config import load_config  # lazy public API (see the docstring)

        return load_config
    if name == "find_label_issues":
        from tcl_lite.results.label_issues import find_label_issues  # lazy public API

        return find_label_issues
    if name == "load_model":
        from tcl_lite.inference.export_model import load_model  # lazy public API

        return load_model
    raise AttributeError(f"module 'tcl_lite' has no attribute {name!r}")
