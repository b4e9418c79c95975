"""What a method trains with: its networks (``Method.model_specs``) and one optimizer of ``optim.*`` each.

Pure builders, below both the engine (which prepares what they return with Accelerate) and the
planner (``tcl_lite.plan``, which builds the same networks and optimizers under fake tensors).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from tcl_lite.config import Config, OptimConfig
from tcl_lite.errors import ConfigError
from tcl_lite.models.network import build_model
from tcl_lite.models.sync_norm import convert_sync_batchnorm


class _DropKernelsNotice(logging.Filter):
    """bitsandbytes' CPU backend logs a warning at import when the optional ``kernels`` package (its 4-bit
    CPU matmul, which no optimizer uses) is missing; it alarms users of the 8-bit optimizers for nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "kernels" not in record.getMessage()


@contextlib.contextmanager
def quiet_bitsandbytes_import() -> Iterator[None]:
    """Around our bitsandbytes import only: its loggers drop the ``kernels`` notice; nothing else is muted."""
    quiet = _DropKernelsNotice()
    loggers = [logging.getLogger(n) for n in ("bitsandbytes", "bitsandbytes.backends.cpu.ops")]
    for lg in loggers:
        lg.addFilter(quiet)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(quiet)


def _bitsandbytes_optim():  # noqa: ANN202 - returns the module or None
    try:
        with quiet_bitsandbytes_import():
            import bitsandbytes.optim as bnb_optim
    except Exception as e:  # an ImportError, or a native library that fails to load
        warnings.warn(f"bitsandbytes could not be loaded ({type(e).__name__}: {e}); the 8-bit optimizer "
                      "falls back to its 32-bit form, which needs 4x the optimizer-state memory. "
                      "Fix: pip install bitsandbytes", RuntimeWarning, stacklevel=3)
        return None
    return bnb_optim


def build_optimizer(cfg: OptimConfig, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """``lr`` is the peak learning rate (already scaled); the schedule sets it every step."""
    params = [p for p in model.parameters() if p.requires_grad]
    name = cfg.name
    if name.endswith("8bit"):
        bnb_optim = _bitsandbytes_optim()
        if bnb_optim is not None:
            if name == "sgd8bit":
                if cfg.momentum == 0:
                    raise ConfigError("config key 'optim.momentum': bitsandbytes' 8-bit SGD needs momentum > 0 "
                                      "(its state is the momentum buffer); use optim.name=sgd without momentum")
                return bnb_optim.SGD8bit(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
            return bnb_optim.AdamW8bit(params, lr=lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
        name = name.removesuffix("8bit")
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def sync_bn_on(cfg: Config, method_cls: Any, processes: int) -> bool:
    """Whether BatchNorm statistics are synchronised across ``processes`` (``model.sync_bn``)."""
    setting = cfg.model.sync_bn
    return processes > 1 and (setting == "on" or (setting == "auto" and bool(method_cls.sync_bn)))


def build_networks(cfg: Config, method_cls: Any, data: Any, processes: int = 1,
                   device_type: str = "cpu") -> dict[str, nn.Module]:
    """The method's networks (``model_specs``), each built from ``model.*`` and its whole spec in declaration
    order, so that their initial weights are a function of the seed. ``data``: anything with ``num_classes``,
    ``channels`` and ``image_size`` (a DataBundle, or the planner's dataset metadata); ``processes`` and
    ``device_type``: the run's, for ``model.sync_bn`` (BatchNorm synchronised across processes, converted
    before data parallelism wraps the networks)."""
    specs = method_cls.model_specs(cfg)
    if not specs:
        raise ConfigError(f"method {method_cls.name!r} declares no network to train")
    networks = {name: build_model(cfg.model, data.num_classes, in_channels=data.channels, image_size=data.image_size,
                                  spec=spec, activation_checkpointing=cfg.train.activation_checkpointing)
                for name, spec in specs.items()}
    if sync_bn_on(cfg, method_cls, processes):
        networks = {name: convert_sync_batchnorm(net, device_type) for name, net in networks.items()}
    return networks


def build_optimizers(cfg: Config, models: dict[str, nn.Module], max_lr: float) -> dict[str, torch.optim.Optimizer]:
    """One optimizer of ``optim.*`` per network, under the network's name."""
    return {name: build_optimizer(cfg.optim, model, max_lr) for name, model in models.items()}
