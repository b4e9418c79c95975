"""Building what a run trains with: the accelerator, the method's networks and their optimizers."""

from __future__ import annotations

from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration
from torch import nn

from tcl_lite.config import Config
from tcl_lite.errors import ConfigError
from tcl_lite.methods.build import build_networks, build_optimizers  # noqa: F401 - built below (the planner too)
from tcl_lite.runlog.trackers import resolve_trackers


def make_accelerator(cfg: Config) -> Accelerator:
    if cfg.train.mixed_precision == "fp16" and (cfg.train.cpu or not torch.cuda.is_available()):
        raise ConfigError("config key 'train.mixed_precision': fp16 needs a GPU; use bf16 (also on CPU) or no")
    return Accelerator(
        cpu=cfg.train.cpu, mixed_precision=cfg.train.mixed_precision,
        log_with=resolve_trackers(cfg.train.log_with) or None, project_dir=cfg.output_dir,
        # The sampler reseeds from (seed + key) before every pass: the data order needs no saved state.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
    )


def prepare(accelerator: Accelerator, models: dict[str, nn.Module], optimizers: dict[str, Any]
            ) -> tuple[dict[str, nn.Module], dict[str, Any]]:
    """Every network and optimizer through ``accelerator.prepare`` (device, DDP, mixed precision)."""
    names = list(models)
    prepared = accelerator.prepare(*models.values(), *optimizers.values())
    if not isinstance(prepared, tuple):
        prepared = (prepared,)
    return dict(zip(names, prepared[:len(names)])), dict(zip(optimizers, prepared[len(names):]))
