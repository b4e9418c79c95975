"""Training methods the engine drives. A method is a ``Method`` subclass registered with
``@register`` (``registry.py``); importing this package registers the built-in ones."""

from __future__ import annotations

import importlib

from tcl_lite.methods.base import Batch, LoaderSpec, Method, ModelSpec, Phase, StepInfo, TrainContext
from tcl_lite.methods.registry import METHODS, config_sections, get_method, register

# The built-in methods, in the order the docs list them; each registers itself when imported.
BUILTIN = ("ce", "tcl", "mlnt", "dividemix")
for _name in BUILTIN:
    importlib.import_module(f"tcl_lite.methods.{_name}")

__all__ = ["BUILTIN", "METHODS", "Batch", "LoaderSpec", "Method", "ModelSpec", "Phase", "StepInfo", "TrainContext",
           "config_sections", "get_method", "register"]
