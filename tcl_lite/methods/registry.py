"""The method registry: the one place config, CLI, engine, report and export learn which methods
exist and what each declares (its config section, presets, models, per-sample outputs).

A method module registers its class with ``@register``; ``tcl_lite/methods/__init__.py`` imports
the built-in ones. A method defined elsewhere (a test module, a user's script) registers the same
way before ``load_config`` / ``train`` are called.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from tcl_lite.methods.base import Method

METHODS: dict[str, type[Method]] = {}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# Top-level config keys a method's section may not take.
RESERVED = ("method", "seed", "output_dir", "data", "model", "optim", "train", "checkpoint")

M = TypeVar("M")


def register(cls: M) -> M:
    """Class decorator: make ``cls`` available as ``method=<cls.name>`` (re-registering a name
    replaces the earlier class, so a reloaded module stays usable)."""
    name = getattr(cls, "name", "")
    if not _NAME.match(name) or name in RESERVED:
        raise ValueError(f"method name {name!r}: use lower-case letters, digits and _, not one of {RESERVED}")
    METHODS[name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    from tcl_lite.config import ConfigError

    _load_builtin()
    if name not in METHODS:
        raise ConfigError(f"config key 'method': {name!r} is not available; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def config_sections() -> dict[str, type]:
    """``{method name: its config dataclass}`` for every registered method that has one."""
    _load_builtin()
    return {name: cls.config for name, cls in METHODS.items() if cls.config is not None}


def _load_builtin() -> None:
    import tcl_lite.methods  # noqa: F401  (registers ce, tcl, mlnt, dividemix)
