"""Training methods the engine drives: the shared core (``base.py``: Method, TrainContext, Phase...;
``registry.py``) and one subpackage per method (``ce/``, ``tcl/``, ``mlnt/``, ``dividemix/``, ``promix/``).

Importing this package declares the built-in methods, in the order the docs list them: each one's
name and config section (``<name>/config.py``, no torch) and a function that imports its ``Method``
class (``<name>/method.py``, torch) when a run first needs it. So ``tcl-lite train --help`` and
config errors know every method without importing torch. ``Method``, ``register`` and the other
names of ``base``/``registry`` are importable from here, as before.
"""

from __future__ import annotations

from typing import Any

from tcl_lite.methods.dividemix.config import DivideMixConfig
from tcl_lite.methods.mlnt.config import MLNTConfig
from tcl_lite.methods.promix.config import ProMixConfig
from tcl_lite.methods.registry import METHODS, config_sections, declare, get_method, register
from tcl_lite.methods.tcl.config import TCLConfig

BUILTIN = ("ce", "tcl", "mlnt", "dividemix", "promix")


# Each loader imports a method module (and torch) only when a run needs that class.
def _ce() -> Any:
    from tcl_lite.methods.ce.method import CrossEntropy  # torch: loaded on first use (see the docstring)

    return CrossEntropy


def _tcl() -> Any:
    from tcl_lite.methods.tcl.method import TCL  # torch: loaded on first use

    return TCL


def _mlnt() -> Any:
    from tcl_lite.methods.mlnt.method import MLNT  # torch: loaded on first use

    return MLNT


def _dividemix() -> Any:
    from tcl_lite.methods.dividemix.method import DivideMix  # torch: loaded on first use

    return DivideMix


def _promix() -> Any:
    from tcl_lite.methods.promix.method import ProMix  # torch: loaded on first use

    return ProMix


declare("ce", None, _ce)
declare("tcl", TCLConfig, _tcl)
declare("mlnt", MLNTConfig, _mlnt)
declare("dividemix", DivideMixConfig, _dividemix)
declare("promix", ProMixConfig, _promix)

_BASE = ("Batch", "LoaderSpec", "Method", "ModelSpec", "Phase", "StepInfo", "TrainContext")


def __getattr__(name: str) -> Any:
    """``from tcl_lite.methods import Method`` (docs/extending.md) without importing torch for the names above."""
    if name in _BASE:
        from tcl_lite.methods import base  # torch: only for code that defines or drives a method

        return getattr(base, name)
    raise AttributeError(f"module 'tcl_lite.methods' has no attribute {name!r}")


__all__ = ["BUILTIN", "METHODS", *_BASE, "config_sections", "declare", "get_method", "register"]
