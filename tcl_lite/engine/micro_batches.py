"""``train.gradient_accumulation_steps=auto``, resolved once before anything is built: on a fresh run the
fewest micro-batches whose planned peak fits ``train.memory_budget`` (``tcl_lite.plan``), on resume the
count the run's checkpoint was trained with (trainer.json's settings), so the resumed run is the uninterrupted one.
The resolved count replaces ``auto`` in the config (config.yaml keeps it). The out-of-memory retry
(``oom.py``) stays the backstop should the prediction be short."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psutil
import torch

from tcl_lite.config import Config, parse_size
from tcl_lite.plan.planner import default_budget, resolve_micro_batches

KEY = "train.gradient_accumulation_steps"


def saved_micro_batches(checkpoint: Path | None) -> int:
    """The count a checkpoint's run trained with (trainer.json's ``settings``; 0: none recorded)."""
    if checkpoint is None:
        return 0
    try:
        settings = json.loads((Path(checkpoint) / "trainer.json").read_text()).get("settings", {})
        value = settings.get(KEY, 0)
    except (OSError, ValueError, AttributeError):
        return 0
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def device_budget(device: torch.device) -> int:
    """``train.memory_budget``'s default on ``device``."""
    if device.type == "cuda":
        return default_budget("cuda", torch.cuda.get_device_properties(device).total_memory, 0)
    return default_budget(device.type, 0, psutil.virtual_memory().available)


def resolve_auto_micro_batches(cfg: Config, device: torch.device, resume_from: Path | None, log: Any) -> None:
    """Replace ``auto`` in ``cfg.train.gradient_accumulation_steps`` by the count to train with."""
    if cfg.train.gradient_accumulation_steps != "auto":
        return
    saved = saved_micro_batches(resume_from)
    if saved:
        log(f"train.gradient_accumulation_steps=auto: {saved} micro-batch(es), as the run was started with")
        cfg.train.gradient_accumulation_steps = saved
        return
    budget = parse_size(cfg.train.memory_budget) or device_budget(device)
    cfg.train.gradient_accumulation_steps = resolve_micro_batches(cfg, budget, device.type, log)
