"""``train.log_with`` -> the experiment trackers handed to Accelerate (TensorBoard, Weights & Biases).

Trackers get the config once, the evaluation record every epoch and, every ``train.log_every``
steps, the step's loss terms, learning rate and throughput (``train/...`` scalars).
"""

from __future__ import annotations

import importlib.util

from tcl_lite.config import register_check
from tcl_lite.errors import ConfigError

KNOWN = ("tensorboard", "wandb")
CHOICES = ("auto", "none", *KNOWN)
_PACKAGE = {"tensorboard": "tensorboard", "wandb": "wandb"}


def _installed(name: str) -> bool:
    return importlib.util.find_spec(_PACKAGE[name]) is not None


def parse_log_with(text: str) -> list[str]:
    """``"tensorboard,wandb"`` -> the names, each checked against the allowed ones (no import)."""
    names = [n.strip().lower() for n in str(text).replace(" ", ",").split(",") if n.strip()]
    for n in names:
        if n not in CHOICES:
            raise ConfigError(f"config key 'train.log_with': {n!r} is not a tracker; use {', '.join(CHOICES)} "
                              "or a comma-separated list such as tensorboard,wandb")
    if len(names) > 1 and ({"auto", "none"} & set(names)):
        raise ConfigError("config key 'train.log_with': 'auto' and 'none' stand alone; list trackers by name "
                          "(e.g. tensorboard,wandb)")
    return names or ["none"]


register_check("train.log_with", parse_log_with)  # the config loader checks the key with this module's rules


def resolve_trackers(text: str) -> list[str]:
    """The trackers to start: ``auto`` = TensorBoard when it is installed; a tracker named explicitly must
    be installed (an error naming the package to install, before anything is written)."""
    names = parse_log_with(text)
    if names == ["none"]:
        return []
    if names == ["auto"]:
        return ["tensorboard"] if _installed("tensorboard") else []
    missing = [n for n in names if not _installed(n)]
    if missing:
        raise ConfigError(f"config key 'train.log_with': {', '.join(missing)} is not installed; pip install "
                          f"{' '.join(_PACKAGE[n] for n in missing)} (or tcl_lite[{','.join(missing)}]), "
                          "or set train.log_with=none")
    return names


def step_scalars(logs: dict[str, float], lr: float, images_per_second: float) -> dict[str, float]:
    """A training step's scalars for the trackers, under ``train/``."""
    return {**{f"train/{k}": float(v) for k, v in logs.items()}, "train/lr": float(lr),
            "train/images_per_second": float(images_per_second)}
