"""The method registry: the one place config, CLI, engine, report and export learn which methods
exist and what each declares (its config section, presets, models, per-sample outputs).

The entries live in ``tcl_lite.registry.METHODS`` (the ground floor), so that the config loader reads
each method's section and checks ``method=...`` without importing the methods: registration, not an
upward import. A method class registers itself with ``@register`` (a test module, a user's script: before
``load_config`` / ``train`` are called); the built-in ones are *declared* by ``tcl_lite/methods/__init__.py``
(name, config section and a function that imports the class), so their names and sections are known
without torch and each class module is imported when a run first needs it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from tcl_lite.registry import METHODS

if TYPE_CHECKING:
    from tcl_lite.methods.base import Method

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# Top-level config keys a method's section may not take.
RESERVED = ("method", "seed", "output_dir", "data", "model", "optim", "train", "checkpoint")

M = TypeVar("M")


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name) or name in RESERVED:
        raise ValueError(f"method name {name!r}: use lower-case letters, digits and _, not one of {RESERVED}")


def register(cls: M) -> M:
    """Class decorator: make ``cls`` available as ``method=<cls.name>`` (re-registering a name
    replaces the earlier class, so a reloaded module stays usable)."""
    name = getattr(cls, "name", "")
    _check_name(name)
    METHODS.add(name, cls, config=getattr(cls, "config", None))
    return cls


def declare(name: str, config: type | None, load: Callable[[], type[Method]]) -> None:
    """Make ``method=name`` available with its config section, the class coming from ``load()`` when
    first needed (its module imports torch; the name and the section do not need it)."""
    _check_name(name)

    def checked() -> type[Method]:
        cls = load()
        if cls.name != name or cls.config is not config:
            raise ValueError(f"method {name!r} was declared with config {config}, but {cls.__qualname__} is "
                             f"{cls.name!r} with config {cls.config}")
        return cls

    METHODS.add(name, load=checked, config=config)


def get_method(name: str) -> type[Method]:
    """The class of ``method=name``; a ConfigError naming the registered methods otherwise."""
    return METHODS.get_checked(name)


def config_sections() -> dict[str, type]:
    """``{method name: its config dataclass}`` for every registered method that has one (no class loaded)."""
    return {name: METHODS.declared(name)["config"] for name in METHODS if METHODS.declared(name)["config"] is not None}
