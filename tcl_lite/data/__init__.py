"""Datasets, label noise and views for tcl_lite; ``build_data(cfg.data, seed)`` is the entry point.

Importing this package declares the built-in datasets and views (``catalog``, no torch), so that
``data.dataset`` is checked and listed without torch. The names below are importable from here as before,
each loaded (with torch) on first use.
"""

from __future__ import annotations

from typing import Any

from tcl_lite.data import catalog  # noqa: F401 - registers the built-in datasets and views (no torch)

_LAZY = {
    "build": ("DataBundle", "balanced_subset", "build_data"),
    "datasets": ("IndexedDataset", "mix_seed"),
    "noise": ("asymmetric_map", "asymmetric_noise", "load_label_file", "pairflip_noise", "read_label_file",
              "symmetric_noise"),
    "transforms": ("MultiView", "make_transform"),
}


def __getattr__(name: str) -> Any:
    """``from tcl_lite.data import build_data`` (and the names of ``_LAZY``), importing torch only then."""
    if name not in __all__:  # e.g. a submodule not imported yet: the import system then imports it
        raise AttributeError(f"module 'tcl_lite.data' has no attribute {name!r}")
    # torch: the modules below import it; a function-local import keeps this package's import torch-free
    from tcl_lite.data import build, datasets, noise, transforms

    module = {"build": build, "datasets": datasets, "noise": noise, "transforms": transforms}
    return getattr(next(module[m] for m, names in _LAZY.items() if name in names), name)


__all__ = [name for names in _LAZY.values() for name in names]
