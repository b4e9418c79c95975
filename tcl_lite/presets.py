"""The YAML presets by name: ``--config cifar10_tcl_sym50`` works from any directory.

In a checkout the presets are the top-level ``configs/`` folder; an installed package carries the
same files as ``tcl_lite/configs/`` (package data, see setup.py). A path that exists is always used
as given, so a user's own YAML file works as before.
"""

from __future__ import annotations

from pathlib import Path

from tcl_lite.errors import ConfigError

_PACKAGE = Path(__file__).resolve().parent


def preset_dirs() -> list[Path]:
    """Where presets live: the installed package's copy, then a checkout's configs/ folder."""
    return [d for d in (_PACKAGE / "configs", _PACKAGE.parent / "configs") if d.is_dir()]


def available_presets() -> list[str]:
    return sorted({p.stem for d in preset_dirs() for p in d.glob("*.yaml")})


def _by_name(name: str) -> Path | None:
    stem = name.removesuffix(".yaml").removesuffix(".yml")
    for d in preset_dirs():
        for candidate in (d / f"{stem}.yaml", d / f"{stem}.yml"):
            if candidate.is_file():
                return candidate
    return None


def find_preset(spec: str | Path) -> Path:
    """A YAML path or a preset name (``digits_tcl``, ``digits_tcl.yaml`` or ``configs/digits_tcl.yaml``)
    -> the file to read. Raises ConfigError naming the available presets when there is none."""
    path = Path(spec)
    if path.is_file():
        return path
    # A bare name, or the README's `configs/NAME.yaml` typed outside a checkout: look it up by name.
    if path.parent in (Path("."), Path("configs")):
        found = _by_name(path.name)
        if found is not None:
            return found
    names = available_presets()
    raise ConfigError(f"config file {str(spec)!r} does not exist and is not a preset name; give a YAML path "
                      f"or one of the presets: {', '.join(names) if names else '(none found)'} "
                      "(e.g. --config digits_tcl)")


def find_base(base: str, referring_file: Path) -> Path:
    """A preset's ``base:``: a path relative to the file naming it, else a preset name."""
    relative = referring_file.parent / base
    if relative.is_file():
        return relative.resolve()
    found = _by_name(Path(base).name) if Path(base).parent in (Path("."), Path("configs")) else None
    if found is None:
        raise ConfigError(f"config file {str(referring_file)!r}: base {base!r} is neither a file next to it nor a "
                          f"preset; presets: {', '.join(available_presets())}")
    return found.resolve()
