"""Name -> thing registries that the owners of the things fill (imports nothing of tcl_lite but errors).

A lower layer names what a higher one provides without importing it: the config loader checks
``method=...``, ``model.arch=...`` and ``data.dataset=...`` against ``METHODS``, ``ARCHS`` and ``DATASETS``,
which ``tcl_lite.methods``, ``tcl_lite.models`` and ``tcl_lite.data`` fill when they are imported. An entry
is either the thing itself (``add(name, thing)``) or a function that loads it (``add(name, load=...)``) plus
what is declared about it before it is loaded (a method's config section, a dataset's one-line help).
Names and declarations are then known without the thing's module, which imports torch: ``tcl-lite train
--help`` and every config error answer without torch.

A *family* entry (``family=True``, a name ending in ``:``, e.g. ``timm:``) serves every name that starts
with it (``timm:convnext_tiny``); its declared ``member_check`` (if any) checks the member's name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, Generic, TypeVar

from tcl_lite.errors import ConfigError, DataError, UserError

T = TypeVar("T")

#: what registers every built-in entry (named by the errors of an empty registry)
REGISTERS_BUILTINS = "`tcl_lite.load_config` (or `tcl_lite.register_builtins()`)"


class Registry(MutableMapping[str, T], Generic[T]):
    """Things by name, in registration order; ``registry[name]`` loads a lazily registered thing once."""

    def __init__(self, kind: str, key: str, filled_by: str, error: type[UserError] = ConfigError,
                 where: str = "") -> None:
        self.kind, self.key = kind, key  # key: the config key that names an entry (errors, tables)
        self.where = where or f"config key '{key}'"  # how an error names the place of a wrong name
        self.filled_by = filled_by  # the module whose import registers the built-in entries (for errors)
        self.error = error  # the error family of a name that is not registered
        self._declared: dict[str, dict[str, Any]] = {}
        self._things: dict[str, T] = {}
        self._loaders: dict[str, Callable[[], T]] = {}

    def add(self, name: str, thing: T | None = None, *, load: Callable[[], T] | None = None,
            family: bool = False, **declared: Any) -> None:
        """Register ``thing`` (or ``load``, called on first use) as ``name``; re-adding a name replaces it.
        ``family``: ``name`` ends in ``:`` and the entry serves every ``name<member>``."""
        if (thing is None) == (load is None):
            raise ValueError(f"{self.kind} {name!r}: give the thing or a function that loads it, not both")
        if family != name.endswith(":"):
            raise ValueError(f"{self.kind} {name!r}: a family's name ends in ':', no other name does")
        self._declared[name] = {**declared, "family": family}
        self._things.pop(name, None)
        self._loaders.pop(name, None)
        if thing is not None:
            self._things[name] = thing
        else:
            self._loaders[name] = load

    def declared(self, name: str) -> dict[str, Any]:
        """What was declared with ``name`` (read without loading it); a family member reads its family's."""
        return self._declared[self.find(name) or name]

    def find(self, name: str) -> str | None:
        """The entry that serves ``name``: itself, or the family whose prefix it has; None if none does."""
        declared = self._declared.get(name)
        if declared is not None and not declared["family"]:
            return name
        family, colon, member = name.partition(":")
        return family + colon if colon and member and self._declared.get(family + colon, {}).get("family") else None

    def shown(self) -> list[str]:
        """The names as a user writes them (a family as ``timm:<name>``)."""
        return [f"{n}<name>" if d["family"] else n for n, d in self._declared.items()]

    def check(self, name: str) -> None:
        """An error (``self.error``) naming the registered names unless ``name`` is one; a family member
        is checked by the family's declared ``member_check``."""
        entry = self.find(name)
        if entry is not None:
            member_check = self._declared[entry].get("member_check")
            if member_check is not None:
                member_check(name)
            return
        if not self:
            raise self.error(f"{self.where}: {name!r} is not available: no {self.kind} is registered yet "
                             f"({REGISTERS_BUILTINS} registers the built-in ones; `import {self.filled_by}` those "
                             f"of the {self.kind}s alone)")
        raise self.error(f"{self.where}: {name!r} is not available; choose one of {', '.join(self.shown())}")

    def get_checked(self, name: str) -> T:
        """The thing serving ``name`` (its family's for a member), or the error of ``check``."""
        self.check(name)
        return self[self.find(name)]

    def table(self, column: str = "what it is") -> str:
        """A Markdown table of the entries and their declared ``help`` (the README's tables)."""
        rows = [f"| `{self.key}` | {column} |", "| --- | --- |"]
        rows += [f"| `{shown}` | {self._declared[name].get('help', '')} |"
                 for name, shown in zip(self._declared, self.shown())]
        return "\n".join(rows)

    def __getitem__(self, name: str) -> T:
        if name not in self._things:
            if name not in self._loaders:
                raise KeyError(name)
            self._things[name] = self._loaders.pop(name)()
        return self._things[name]

    def __setitem__(self, name: str, thing: T) -> None:
        self.add(name, thing, family=name.endswith(":"))

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
#: the encoders (``model.arch=NAME``), filled by ``tcl_lite.models.archs``: builders
#: ``(model config, in_channels, image_size) -> encoder``; declared: ``help``, ``weights``, ``weights_file``,
#: ``input_settings``, ``member_check`` (see ``models/archs.py``)
ARCHS: Registry[Any] = Registry("architecture", "model.arch", filled_by="tcl_lite.models")
#: the datasets (``data.dataset=NAME``), filled by ``tcl_lite.data.catalog``: ``data.entries.Dataset``
#: objects (read, describe); declared: ``help``, ``check``, ``self_contained``
DATASETS: Registry[Any] = Registry("dataset", "data.dataset", filled_by="tcl_lite.data")
#: the training views a method names in ``Method.views``, filled by ``tcl_lite.data.catalog``:
#: ``data.entries.View`` objects (per sample and batched); declared: ``help``
VIEWS: Registry[Any] = Registry("view", "view", filled_by="tcl_lite.data", error=DataError, where="view")
