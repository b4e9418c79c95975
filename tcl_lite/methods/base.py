"""What a training method is to the engine.

The engine owns the run (devices, data order, optimizer steps, LR, checkpoints, resume,
evaluation, time budget); a method owns its models' roles, its losses, how it splits a batch, its
data per epoch and whatever state it keeps. A method class declares, for the registry
(``methods/registry.py``):

* ``name``, ``config`` (its config section's dataclass, the section named ``name``), ``presets``,
  ``views``, ``metric_labels`` (its metrics, for plots and the report);
* ``model_specs(cfg)``: the networks it trains, each a ``ModelSpec`` (projector, extra classifier heads;
  each network gets an optimizer, prepared by Accelerate, scheduled, clipped, checkpointed and resumed by
  the engine);
* ``inference_model(models)``: what predicts with a run's networks (e.g. a sum of logits);
* ``per_sample_outputs(state)`` and ``label_issue_scores(scoring)``: its per-sample verdicts, for
  the report, ``export`` and ``find_label_issues``;
* ``warmup_epochs()``, ``trust_signals()``, ``diagnostic_model()``: what the run's trust diagnostics
  (``algorithms/trust.py``) read; the defaults suit a method without a warm-up or a detection of its own.

The engine then calls, in this order::

    method = Method(ctx)                      # ctx: models, optimizers, data, memory services
    method.load_state_dict(...)               # when resuming
    method.before_training(resumed)           # e.g. TCL's first noise-detection pass
    per epoch:
        method.begin_epoch(epoch)             # not when resuming inside the epoch
        for each phase of method.epoch_plan(epoch), for each of its steps:
            logs = method.training_step(batch, info)   # forward AND backward of the whole batch
            (engine: clip, step the phase's optimizers, zero_grad)
            method.after_optimizer_step(info)
        metrics = method.after_epoch(epoch)   # e.g. TCL's detection pass + GMM
        engine evaluates every model in method.eval_models()
        metrics |= method.after_evaluation(metrics)
        engine diagnoses method.trust_signals()   # evaluated epochs; the last one: a pass if None

A method with a plain per-sample loss implements ``loss`` and inherits ``training_step``, which
accumulates over ``ctx.micro_batches`` micro-batches (``methods/accumulate.py``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from tcl_lite.algorithms.accumulate import accumulate, split_batch
from tcl_lite.methods.planning import PlanEpoch, PlanPass
from tcl_lite.models.network import ModelSpec  # re-exported: a method declares its networks with it

if TYPE_CHECKING:
    import numpy as np
    from accelerate import Accelerator

    from tcl_lite.algorithms.trust import TrustSignals
    from tcl_lite.config import Config
    from tcl_lite.data import DataBundle

Batch = dict[str, Any]
StateDict = dict[str, Any]  # values: Tensors (saved as safetensors) or JSON-serialisable
PRIMARY = "model"  # the name of a one-network method's model (its weights: model.safetensors)


@dataclass
class StepInfo:
    """Where the loop is. ``global_step`` counts optimizer steps already taken; ``step_in_epoch``
    counts the epoch's steps over all its phases; ``phase_step`` those of the current phase."""

    epoch: int
    step_in_epoch: int
    global_step: int
    steps_per_epoch: int
    phase: str = "train"
    phase_step: int = -1  # -1: the epoch has a single phase (same as step_in_epoch)
    phase_steps: int = -1
    role: str = "train"  # the phase's ``role`` and ``info`` (``Phase``), passed through by the engine
    phase_info: dict[str, Any] = field(default_factory=dict)

    @property
    def fractional_epoch(self) -> float:
        return self.epoch + self.step_in_epoch / max(1, self.steps_per_epoch)


@dataclass
class LoaderSpec:
    """One loader of a phase. Its order is a function of (seed, epoch, phase, loader, pass over it),
    so resuming inside the phase is exact; a loader that runs out before the phase ends starts a
    new pass (the reference's cycled unlabeled loader)."""

    dataset: Any  # items are {"index", "image", "label", ...}; IndexedDataset-like (set_epoch, finish_batch)
    batch_size: int
    shuffle: bool = True
    drop_last: bool = True


@dataclass
class Phase:
    """Part of an epoch: ``steps`` optimizer steps (default: one pass over the first loader), each
    on one batch of every loader, stepping ``optimizers`` (default: all).

    ``role`` and ``info`` are the method's own structured description of the phase (e.g. DivideMix:
    role ``warmup``, info ``{"network": "net1"}``); the engine never reads them and hands them to every
    step as ``StepInfo.role`` / ``StepInfo.phase_info``, so a method never parses its phase names."""

    name: str
    loaders: dict[str, LoaderSpec]
    steps: int | None = None
    optimizers: tuple[str, ...] | None = None
    role: str = "train"
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainContext:
    """What the engine hands to a method: models and optimizers already prepared by Accelerate,
    the data, and the memory services (micro-batches, gradient sync, backward, autocast).

    ``models``/``optimizers`` may be given as one module/optimizer (a one-network method)."""

    cfg: Config
    accelerator: Accelerator
    models: dict[str, nn.Module] | nn.Module
    optimizers: dict[str, torch.optim.Optimizer] | torch.optim.Optimizer | None
    data: DataBundle
    output_dir: Path
    micro_batches: int = 0  # 0: train.gradient_accumulation_steps; the engine raises it after an OOM
    log: Any = None  # the run's log (console + train.log); default: the main process's console

    def __post_init__(self) -> None:
        if isinstance(self.models, nn.Module):
            self.models = {PRIMARY: self.models}
        if self.optimizers is None:
            self.optimizers = {}
        elif not isinstance(self.optimizers, dict):
            self.optimizers = {next(iter(self.models)): self.optimizers}
        if self.micro_batches <= 0:
            self.micro_batches = self.cfg.train.gradient_accumulation_steps

    @property
    def model(self) -> nn.Module:
        """The first (for most methods the only) model; possibly DDP-wrapped: call it, not its parts."""
        return next(iter(self.models.values()))

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return next(iter(self.optimizers.values()))

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def unwrapped_model(self, name: str | None = None) -> nn.Module:
        return self.accelerator.unwrap_model(self.models[name] if name else self.model)

    # -- memory services ---------------------------------------------------------------------
    def split(self, batch: Batch, n: int | None = None) -> list[Batch]:
        """The batch as ``n`` (default ``micro_batches``) micro-batches along dim 0."""
        return split_batch(batch, n or self.micro_batches)

    def backward(self, loss: Tensor, **kwargs: Any) -> None:
        self.accelerator.backward(loss, **kwargs)

    def grad(self, outputs: Tensor, inputs: Any, **kwargs: Any) -> tuple[Tensor, ...]:
        """``torch.autograd.grad``, as a service of the context: the planner's device check, which
        cannot run the autograd engine on a fake GPU, stands in for it (and for ``backward``)."""
        return torch.autograd.grad(outputs, inputs, **kwargs)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The run's mixed precision, for forwards of modules that Accelerate did not prepare."""
        return self.accelerator.autocast()

    def sync_gradients(self, last: bool, models: Any = None) -> contextlib.AbstractContextManager:
        """All-reduce gradients only on the last backward of a step (as ``accelerator.accumulate``);
        ``models``: the module(s) the backward reaches (default: all of the method's)."""
        if last:
            return contextlib.nullcontext()
        chosen = self.models.values() if models is None else (models if isinstance(models, (list, tuple))
                                                              else [models])
        stack = contextlib.ExitStack()
        for m in chosen:
            stack.enter_context(self.accelerator.no_sync(m))
        return stack

    def loader(self, dataset: torch.utils.data.Dataset, batch_size: int | None = None) -> Any:
        """An ordered loader sharded over processes; gather its outputs with ``gather_for_metrics``."""
        dl = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size or self.cfg.train.eval_batch_size, shuffle=False,
            num_workers=self.cfg.data.num_workers, pin_memory=self.accelerator.device.type == "cuda")
        return self.accelerator.prepare_data_loader(dl)

    def print(self, *args: Any) -> None:
        """A message for the user: on the console and in OUTPUT/train.log (main process only)."""
        if self.log is not None:
            self.log(*args)
        else:
            self.accelerator.print(*args)


class Method:
    """Base class: subclasses set ``name``/``views`` and implement ``loss`` or ``training_step``."""

    name: ClassVar[str] = "base"
    #: the dataclass of the method's config section (``cfg.<name>``), or None
    config: ClassVar[type | None] = None
    #: preset names (configs/<name>.yaml) that train this method
    presets: ClassVar[tuple[str, ...]] = ()
    #: transforms of the training sample, in order (names from the data package: weak|strong|test)
    views: ClassVar[tuple[str, ...]] = ("weak",)
    #: whether the network needs the projector head
    needs_projector: ClassVar[bool] = False
    #: metrics the method adds to metrics.jsonl -> a label for plots and the report
    metric_labels: ClassVar[dict[str, str]] = {}
    #: the config key of the method's warm-up, named when a run is too short to leave it
    warmup_setting: ClassVar[str] = ""
    #: the name of its epochs after that warm-up, in plans (``plan_epochs``)
    after_warmup: ClassVar[str] = "train"
    #: the mean/std set its reference implementation normalises with, by name (``Dataset.normalizations``,
    #: e.g. CIFAR's ``tcl``): what ``data.normalization=auto`` picks; "" = the dataset's own statistics
    normalization: ClassVar[str] = ""
    #: whether its reference synchronises BatchNorm statistics across processes (``model.sync_bn=auto``)
    sync_bn: ClassVar[bool] = False

    def __init__(self, ctx: TrainContext) -> None:
        self.ctx = ctx
        self.cfg = ctx.cfg
        self._train_set: Any = None  # the default epoch plan's dataset, built once
        #: a method's newest detection's signals (set after each detection), until the engine takes them
        self.pending_signals: TrustSignals | None = None

    # -- declarations (class level: read before anything is built) -------------------------------
    @classmethod
    def model_specs(cls, cfg: Config) -> dict[str, ModelSpec]:
        """The networks this method trains, by name; the first is the primary one."""
        return {PRIMARY: ModelSpec(projector=cls.needs_projector)}

    @classmethod
    def inference_model(cls, models: dict[str, nn.Module]) -> nn.Module:
        """The module that predicts with a trained run's networks (``model_specs`` order)."""
        return next(iter(models.values()))

    @classmethod
    def per_sample_outputs(cls, state: StateDict) -> dict[str, np.ndarray] | None:
        """Per training sample, from a checkpoint's method state: ``clean_probability`` and
        optionally ``corrected_label``; None when the method keeps no such verdict."""
        return None

    @classmethod
    def label_issue_scores(cls, scoring: Any) -> tuple[np.ndarray, np.ndarray]:
        """(score that the given label is wrong, suggested label) per training sample. ``scoring``
        is ``detection.label_issues.ScoringContext``; default: the self-confidence of the model."""
        return scoring.self_confidence()

    # -- hooks ---------------------------------------------------------------------------------
    def before_training(self, resumed: bool) -> dict[str, float]:
        """Called once after the models (and, when resuming, the state) are loaded."""
        return {}

    def begin_epoch(self, epoch: int) -> None:
        """Called before the first step of ``epoch`` (not when resuming inside it: the state
        saved there already holds what this computed)."""

    @classmethod
    def fixed_epoch_plan(cls) -> bool:
        """Whether every epoch has the same steps (the default plan, one pass over the training set), so
        that a checkpoint's per-epoch step counts can be checked against the data on resume. A method
        whose plan depends on its state (DivideMix's divisions) overrides ``epoch_plan``: not checked."""
        return cls.epoch_plan is Method.epoch_plan

    def epoch_plan(self, epoch: int) -> list[Phase]:
        """The phases of ``epoch``: a pure function of the method's state and ``epoch`` (the engine calls
        it more than once per epoch, e.g. to count a resumed epoch's steps; state belongs in
        ``begin_epoch``). Default:
        one pass over the training set under ``views``, ``train.batch_size`` per process."""
        if self._train_set is None:
            self._train_set = self.ctx.data.train_views(self.views, self.ctx.device)
        return [Phase("train", {"": LoaderSpec(self._train_set, self.cfg.train.batch_size)})]

    def loss(self, batch: Batch, info: StepInfo) -> tuple[Tensor, dict[str, Tensor]]:
        """The mean loss of one (micro-)batch and the terms to log."""
        raise NotImplementedError

    def training_step(self, batch: Batch, info: StepInfo) -> dict[str, Tensor]:
        """Forward and backward of one optimizer step on the whole batch; returns detached terms
        to log (``loss`` among them)."""
        return accumulate(self.ctx, batch, lambda mb: self.loss(mb, info))

    def after_optimizer_step(self, info: StepInfo) -> None:
        """Called after every optimizer step (``info.global_step`` already counts it)."""

    def after_epoch(self, epoch: int) -> dict[str, float]:
        """Called at the end of every epoch, before evaluation; returns metrics to record."""
        return {}

    def after_evaluation(self, metrics: dict[str, float]) -> dict[str, float]:
        """Called after each evaluation with its metrics; returns metrics to add (e.g. the best of
        several evaluated models, which ``checkpoint.best_metric`` may then name)."""
        return {}

    def eval_models(self) -> dict[str, nn.Module]:
        """Models to evaluate; '' names the main one (metric ``test_acc``), another name ``n``
        gives ``n_test_acc``. Each returns an object with ``.logits``."""
        return {"": self.ctx.model}

    # -- trust diagnostics (algorithms/trust.py) --------------------------------------------------
    def warmup_epochs(self) -> float:
        """Epochs trained on the given labels before the method uses its own verdicts (0: none). A run
        that ends within them is `not usable` for corrections; the engine warns at start. By default the
        value of the config key ``warmup_setting`` names (0 without one)."""
        if not self.warmup_setting:
            return 0.0
        section, key = self.warmup_setting.split(".")
        return float(getattr(getattr(self.cfg, section), key))

    def trust_signals(self) -> TrustSignals | None:
        """The per-sample signals of the detection made since the last call, then forgotten (they hold
        N x d features); None when there is none new. The engine diagnoses them after each evaluated epoch;
        when the last epoch's call gives None it runs its own pass over the training set with
        ``diagnostic_model``. They must describe the verdicts ``label_issue_scores`` hands out. By default
        ``pending_signals``, which a method sets after each detection."""
        signals, self.pending_signals = self.pending_signals, None
        return signals

    def diagnostic_model(self) -> nn.Module:
        """The network whose self-confidence ranks the labels (``label_issue_scores``' default): the one the
        engine's end-of-training pass runs."""
        return self.eval_models()[""]

    # -- planning (``methods/planning.py``; ``tcl_lite.plan`` traces what these declare) ----------
    @classmethod
    def plan_config(cls, cfg: Config) -> Config:
        """The config the planner traces (same shapes, no files to read); default: ``cfg``."""
        return cfg

    @classmethod
    def plan_epochs(cls, cfg: Config) -> list[PlanEpoch]:
        """The kinds of epoch of a run of ``cfg``; default: every epoch like the first, or, for a method with
        a warm-up counted in epochs (``warmup_setting``), the warm-up's epochs and the ``after_warmup`` ones."""
        if not cls.warmup_setting:
            return [PlanEpoch("train", 0, cfg.train.epochs)]
        section, key = cls.warmup_setting.split(".")
        warm = min(getattr(getattr(cfg, section), key), cfg.train.epochs)
        kinds = [PlanEpoch("warm-up", 0, warm), PlanEpoch(cls.after_warmup, warm, cfg.train.epochs - warm)]
        return [k for k in kinds if k.count > 0]

    def prepare_plan(self, epoch: int) -> None:
        """A plausible state for tracing ``epoch`` without having trained; default: as built."""

    def plan_passes(self, epoch: int) -> list[PlanPass]:
        """Forward-only passes over data in an epoch like ``epoch``, besides training and the engine's
        evaluation; default: none."""
        return []

    # -- checkpoint state ----------------------------------------------------------------------
    def state_dict(self) -> StateDict:
        """Flat dict; Tensor values go to safetensors, the rest must be JSON-serialisable."""
        return {}

    def load_state_dict(self, state: StateDict) -> None:
        """Restores ``state_dict()``'s output exactly."""
