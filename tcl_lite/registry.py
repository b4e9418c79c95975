"""Name -> thing registries that the owners of the things fill (imports nothing of tcl_lite but errors).

A lower layer names what a higher one provides without importing it: the config loader checks
``method=...`` and reads each method's config section from ``METHODS``, which ``tcl_lite.methods``
fills when it is imported. An entry is either the thing itself (``add(name, thing)``) or a function
that loads it (``add(name, load=...)``) plus what is declared about it before it is loaded (a method's
config section). Names and declarations are then known without the thing's module, which imports
torch: ``tcl-lite train --help`` and every config error answer without torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, Generic, TypeVar

from tcl_lite.errors import ConfigError

T = TypeVar("T")


class Registry(MutableMapping[str, T], Generic[T]):
    """Things by name, in registration order; ``registry[name]`` loads a lazily registered thing once."""

    def __init__(self, kind: str, key: str, filled_by: str) -> None:
        self.kind, self.key = kind, key  # key: the config key that names an entry (for errors)
        self.filled_by = filled_by  # the module whose import registers the built-in entries (for errors)
        self._declared: dict[str, dict[str, Any]] = {}
        self._things: dict[str, T] = {}
        self._loaders: dict[str, Callable[[], T]] = {}

    def add(self, name: str, thing: T | None = None, *, load: Callable[[], T] | None = None, **declared: Any) -> None:
        """Register ``thing`` (or ``load``, called on first use) as ``name``; re-adding a name replaces it."""
        if (thing is None) == (load is None):
            raise ValueError(f"{self.kind} {name!r}: give the thing or a function that loads it, not both")
        self._declared[name] = dict(declared)
        self._things.pop(name, None)
        self._loaders.pop(name, None)
        if thing is not None:
            self._things[name] = thing
        else:
            self._loaders[name] = load

    def declared(self, name: str) -> dict[str, Any]:
        """What was declared with ``name`` (read without loading it)."""
        return self._declared[name]

    def check(self, name: str) -> None:
        """A ConfigError naming the registered names unless ``name`` is one."""
        if name in self._declared:
            return
        if not self:
            raise ConfigError(f"config key '{self.key}': {name!r} is not available: no {self.kind} is registered yet "
                              f"(`import {self.filled_by}` registers the built-in ones)")
        raise ConfigError(f"config key '{self.key}': {name!r} is not available; choose one of {', '.join(self)}")

    def get_checked(self, name: str) -> T:
        """``self[name]``, or the ConfigError of ``check``."""
        self.check(name)
        return self[name]

    def __getitem__(self, name: str) -> T:
        if name not in self._things:
            if name not in self._loaders:
                raise KeyError(name)
            self._things[name] = self._loaders.pop(name)()
        return self._things[name]

    def __setitem__(self, name: str, thing: T) -> None:
        self.add(name, thing)

    def __delitem__(self, name: str) -> None:
        del self._declared[name]
        self._things.pop(name, None)
        self._loaders.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._declared

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._declared))

    def __len__(self) -> int:
        return len(self._declared)


#: the training methods (``method=NAME``), filled by ``tcl_lite.methods``; declared: ``config``, the
#: dataclass of the method's config section (or None)
METHODS: Registry[Any] = Registry("method", "method", filled_by="tcl_lite.methods")
