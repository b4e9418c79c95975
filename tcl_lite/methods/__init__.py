"""Training methods the engine drives. Add one by subclassing ``Method`` and listing it here."""

from __future__ import annotations

from tcl_lite.config import ConfigError
from tcl_lite.methods.base import Batch, Method, StepInfo, TrainContext
from tcl_lite.methods.ce import CrossEntropy
from tcl_lite.methods.mlnt import MLNT
from tcl_lite.methods.tcl import TCL

METHODS: dict[str, type[Method]] = {m.name: m for m in (CrossEntropy, MLNT, TCL)}


def get_method(name: str) -> type[Method]:
    if name not in METHODS:
        raise ConfigError(f"config key 'method': {name!r} is not available; choose one of {', '.join(METHODS)}")
    return METHODS[name]


__all__ = ["METHODS", "Batch", "Method", "StepInfo", "TrainContext", "get_method"]
