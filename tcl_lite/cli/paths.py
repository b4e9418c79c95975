"""Paths given on the command line and in the config, checked before a command reads anything: a
missing, empty, damaged or wrong-kind file is a ``PathError`` / ``ConfigError`` (exit 2) naming the
argument or config key, the path and what it should be (``tcl_lite/files.py`` says what is wrong)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tcl_lite import files
from tcl_lite.config import Config, key_fields
from tcl_lite.errors import ConfigError, PathError

WHAT = {"file": "a file", "folder": "a folder",
        "run": "a run directory written by train.py (with config.yaml and metrics.jsonl, checkpoints/)",
        "model": "a run directory written by train.py or a folder written by export-model",
        "checkpoint": "a checkpoint folder, a run directory or a .safetensors file",
        "output": "a folder to write to", "output-file": "a file to write"}


def check_args(command: str, paths: Iterable[tuple[str, str | None, str]]) -> None:
    """``(argument, value, kind)`` triples of one command (kinds: ``WHAT``); None values (not given) are skipped."""
    for argument, value, kind in paths:
        if value is None:
            continue
        why = files.problem(value, "folder" if kind in ("run", "model") else kind)
        if why:
            raise PathError(f"{argument} {value}: {why}; expected {WHAT[kind]}")


def checkpoint_arg(value: str) -> str | None:
    """``--checkpoint``: a keyword (auto, best, final...) or a checkpoint folder; the folder is checked."""
    return None if value in ("auto", "best", "final", "newest-or-best") else value


def config_paths(cfg: Config) -> list[tuple[str, str, str]]:
    """``(key, value, kind)`` of every config key that names a path (``opt(..., path=KIND)``) and is set."""
    out = []
    for key, (_, meta) in key_fields().items():
        kind = meta.get("path")
        node = cfg
        for part in key.split("."):
            node = getattr(node, part)
        if kind and node:
            out.append((key, str(node), kind))
    return out


def check_config(cfg: Config) -> None:
    """Every path the config names that exists: empty, damaged or of the wrong kind is refused now. A path
    that does not exist is left to its reader, which says what to do in its context (torchvision downloads
    into data.root, the run directory is created, MLNT names the CE run to train first...)."""
    for key, value, kind in config_paths(cfg):
        parts = value.split(",") if "," in value and not Path(value).exists() else [value]  # KEYS,LABELS lists
        for part in (p.strip() for p in parts):
            if not Path(part).expanduser().exists():
                continue
            why = files.problem(part, kind)
            if why:
                raise ConfigError(f"config key '{key}': {part!r} {why}; expected {WHAT[kind]}")
