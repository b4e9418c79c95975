"""Building what a run trains with: the accelerator, the method's networks and their optimizers."""

from __future__ import annotations

from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration
from torch import nn

from tcl_lite.config import Config
from tcl_lite.engine.optim import build_optimizer
from tcl_lite.errors import ConfigError
from tcl_lite.models.network import build_model
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


def build_networks(cfg: Config, method_cls: Any, data: Any) -> dict[str, nn.Module]:
    """The method's networks (``model_specs``), each built from ``model.*`` in declaration order, so
    that their initial weights are a function of the seed."""
    specs = method_cls.model_specs(cfg)
    if not specs:
        raise ConfigError(f"method {method_cls.name!r} declares no network to train")
    return {name: build_model(cfg.model, data.num_classes, in_channels=data.channels, image_size=data.image_size,
                              with_projector=spec.projector,
                              activation_checkpointing=cfg.train.activation_checkpointing)
            for name, spec in specs.items()}


def build_optimizers(cfg: Config, models: dict[str, nn.Module], max_lr: float) -> dict[str, torch.optim.Optimizer]:
    """One optimizer of ``optim.*`` per network, under the network's name."""
    return {name: build_optimizer(cfg.optim, model, max_lr) for name, model in models.items()}


def prepare(accelerator: Accelerator, models: dict[str, nn.Module], optimizers: dict[str, Any]
            ) -> tuple[dict[str, nn.Module], dict[str, Any]]:
    """Every network and optimizer through ``accelerator.prepare`` (device, DDP, mixed precision)."""
    names = list(models)
    prepared = accelerator.prepare(*models.values(), *optimizers.values())
    if not isinstance(prepared, tuple):
        prepared = (prepared,)
    return dict(zip(names, prepared[:len(names)])), dict(zip(optimizers, prepared[len(names):]))
