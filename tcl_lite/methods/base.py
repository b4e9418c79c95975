"""What a training method is to the engine.

The engine owns the loop (data order, micro-batches, optimizer step, LR, checkpoints, evaluation).
A method owns its losses and whatever state it keeps between steps or epochs. The engine calls,
in this order:

    method = Method(ctx)                 # ctx: accelerator, model, optimizer, data, config
    method.load_state_dict(...)          # when resuming
    method.before_training(resumed)      # e.g. TCL's first noise-detection pass
    per optimizer step:
        logs = method.training_step(micro_batches, info)   # forward AND backward of the full batch
        (engine: clip, optimizer.step, zero_grad)
        method.after_optimizer_step(info)                   # e.g. MLNT's teacher EMA
    per epoch:
        metrics = method.after_epoch(epoch)                 # e.g. TCL's detection pass + GMM
        engine evaluates every model in method.eval_models()
        metrics |= method.after_evaluation(metrics)

Methods that only need "a loss for a batch" implement ``loss`` and inherit ``training_step``, which
accumulates gradients over the micro-batches the way Accelerate's ``accumulate`` does (no
gradient all-reduce until the last micro-batch, each micro-batch loss scaled by its share).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from accelerate import Accelerator

    from tcl_lite.config import Config
    from tcl_lite.data import DataBundle

Batch = dict[str, Any]
StateDict = dict[str, Any]  # values: Tensors (saved as safetensors) or JSON-serialisable


@dataclass
class StepInfo:
    """Where the loop is. ``global_step`` counts optimizer steps already taken."""

    epoch: int
    step_in_epoch: int
    global_step: int
    steps_per_epoch: int

    @property
    def fractional_epoch(self) -> float:
        return self.epoch + self.step_in_epoch / max(1, self.steps_per_epoch)


@dataclass
class TrainContext:
    """What the engine hands to a method: everything is already prepared by Accelerate."""

    cfg: Config
    accelerator: Accelerator
    model: nn.Module  # possibly DDP-wrapped: always call it, never its sub-modules
    optimizer: torch.optim.Optimizer
    data: DataBundle
    output_dir: Path

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def unwrapped_model(self) -> nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def backward(self, loss: Tensor) -> None:
        self.accelerator.backward(loss)

    def sync_gradients(self, last: bool) -> contextlib.AbstractContextManager:
        """All-reduce gradients only on the last backward of a step (as ``accelerator.accumulate``)."""
        return contextlib.nullcontext() if last else self.accelerator.no_sync(self.model)

    def loader(self, dataset: torch.utils.data.Dataset, batch_size: int | None = None) -> Any:
        """An ordered loader sharded over processes; gather its outputs with ``gather_for_metrics``."""
        dl = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size or self.cfg.train.eval_batch_size, shuffle=False,
            num_workers=self.cfg.data.num_workers, pin_memory=self.accelerator.device.type == "cuda")
        return self.accelerator.prepare_data_loader(dl)

    def print(self, *args: Any) -> None:
        self.accelerator.print(*args)


class Method:
    """Base class: subclasses set ``name``/``views`` and implement ``loss`` or ``training_step``."""

    name: ClassVar[str] = "base"
    #: transforms of the training sample, in order (names from the data package: weak|strong|test)
    views: ClassVar[tuple[str, ...]] = ("weak",)
    #: whether the network needs the projector head
    needs_projector: ClassVar[bool] = False

    def __init__(self, ctx: TrainContext) -> None:
        self.ctx = ctx
        self.cfg = ctx.cfg

    # -- hooks ---------------------------------------------------------------------------------
    def before_training(self, resumed: bool) -> dict[str, float]:
        """Called once after the model (and, when resuming, the state) is loaded."""
        return {}

    def loss(self, batch: Batch, info: StepInfo) -> tuple[Tensor, dict[str, Tensor]]:
        """The mean loss of one (micro-)batch and the terms to log."""
        raise NotImplementedError

    def training_step(self, micro_batches: list[Batch], info: StepInfo) -> dict[str, Tensor]:
        """Forward and backward of one optimizer step; returns detached terms to log."""
        n = len(micro_batches)
        logs: dict[str, Tensor] = {}
        for i, batch in enumerate(micro_batches):
            with self.ctx.sync_gradients(last=i == n - 1):
                loss, terms = self.loss(batch, info)
                self.ctx.backward(loss / n)
            for k, v in {"loss": loss, **terms}.items():
                logs[k] = logs.get(k, 0.0) + v.detach() / n
        return logs

    def after_optimizer_step(self, info: StepInfo) -> None:
        """Called after every optimizer step (``info.global_step`` already counts it)."""

    def after_epoch(self, epoch: int) -> dict[str, float]:
        """Called at the end of every epoch, before evaluation; returns metrics to record."""
        return {}

    def after_evaluation(self, metrics: dict[str, float]) -> dict[str, float]:
        """Called after each test evaluation with its metrics; returns metrics to add (e.g. the
        best of several evaluated models, which ``checkpoint.best_metric`` may then name)."""
        return {}

    def eval_models(self) -> dict[str, nn.Module]:
        """Models to evaluate on the test set; '' names the main model (metric ``test_acc``),
        another name ``n`` gives ``n_test_acc``."""
        return {"": self.ctx.model}

    # -- checkpoint state ----------------------------------------------------------------------
    def state_dict(self) -> StateDict:
        """Flat dict; Tensor values go to safetensors, the rest must be JSON-serialisable."""
        return {}

    def load_state_dict(self, state: StateDict) -> None:
        """Restores ``state_dict()``'s output exactly."""
