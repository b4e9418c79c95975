"""A run traced: one step of every phase of every kind of epoch the method declares, one batch of
every forward-only pass (the method's and the engine's evaluation), with the run's settings.

The method is built as the engine builds it (``methods/build.py``: its networks from ``model_specs``,
one optimizer of ``optim.*`` each), on fake tensors, with the data set's shape only
(``dataset_meta``, ``synthetic``). Steps run as the engine runs them: every network in train mode,
``training_step`` on the whole batch (the method splits it into ``micro_batches``), gradient clipping
when set, the phase's optimizers stepped, gradients set to None. The optimizer state exists before
the traced step (it does from the second step of a run on).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.data import default_collate

from tcl_lite.config import Config
from tcl_lite.methods import get_method
from tcl_lite.methods.base import LoaderSpec, Method, Phase, StepInfo, TrainContext
from tcl_lite.methods.build import build_networks, build_optimizers
from tcl_lite.methods.planning import PlanEpoch, PlanPass
from tcl_lite.plan.dataset_meta import DatasetMeta, dataset_meta
from tcl_lite.plan.synthetic import synthetic_data
from tcl_lite.plan.trace import Trace, TraceAccelerator, fake_module_moves, skipped_grad, tensors_in, trace

EVERY_EPOCH = "every epoch"  # the kind of the engine's evaluation passes


@dataclass(frozen=True)
class Settings:
    """The settings that change memory and not the data: what the planner varies."""

    micro_batches: int
    checkpointing: bool
    precision: str
    optimizer: str

    @classmethod
    def of(cls, cfg: Config) -> Settings:
        n = cfg.train.gradient_accumulation_steps
        return cls(n if isinstance(n, int) else 1, cfg.train.activation_checkpointing, cfg.train.mixed_precision,
                   cfg.optim.name)

    def apply(self, cfg: Config) -> Config:
        out = copy.deepcopy(cfg)
        out.train.gradient_accumulation_steps = self.micro_batches
        out.train.activation_checkpointing = self.checkpointing
        out.train.mixed_precision = self.precision
        out.optim.name = self.optimizer
        return out

    def overrides(self, base: Settings) -> list[str]:
        """The ``key=value`` overrides that turn ``base`` into these settings."""
        keys = (("train.gradient_accumulation_steps", "micro_batches"), ("train.activation_checkpointing",
                "checkpointing"), ("train.mixed_precision", "precision"), ("optim.name", "optimizer"))
        return [f"{key}={str(getattr(self, attr)).lower()}" for key, attr in keys
                if getattr(self, attr) != getattr(base, attr)]


@dataclass
class StepTrace:
    kind: str  # the PlanEpoch's label
    phase: str
    steps: int  # steps of the phase in one epoch
    epochs: int  # epochs of this kind in the run
    trace: Trace


@dataclass
class PassTrace:
    kind: str
    label: str
    samples: int  # of the data set the pass goes over
    batch_samples: int  # of the traced batch
    per_epoch: float
    epochs: int
    trace: Trace

    @property
    def flops_per_pass(self) -> float:
        return self.trace.flops / max(1, self.batch_samples) * self.samples


@dataclass
class RunTrace:
    """Every traced step and pass of one set of settings, and what stops the run (if anything)."""

    settings: Settings
    steps: list[StepTrace] = field(default_factory=list)
    passes: list[PassTrace] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def traces(self) -> list[Trace]:
        return [s.trace for s in self.steps] + [p.trace for p in self.passes]

    @property
    def peak(self) -> Trace:
        """The trace with the largest peak."""
        return max(self.traces, key=lambda t: t.peak_bytes)

    def epoch_flops(self, kind: str) -> dict[str, float]:
        """FLOPs of one epoch of ``kind``: training, the method's passes, evaluation (on average)."""
        return {"training": sum(s.steps * s.trace.flops for s in self.steps if s.kind == kind),
                "passes": sum(p.per_epoch * p.flops_per_pass for p in self.passes if p.kind == kind),
                "evaluation": sum(p.per_epoch * p.flops_per_pass for p in self.passes if p.kind == EVERY_EPOCH)}

    def kinds(self) -> dict[str, int]:
        """Epoch kinds in run order -> epochs of each."""
        return {s.kind: s.epochs for s in self.steps}

    def run_flops(self) -> float:
        return sum(count * sum(self.epoch_flops(kind).values()) for kind, count in self.kinds().items())


class TraceContext(TrainContext):
    """The method's context in a trace: ``grad`` stands in for the autograd engine when the trace runs
    no backward (a fake GPU)."""

    def grad(self, outputs: Tensor, inputs: Any, **kwargs: Any) -> tuple[Tensor, ...]:
        if self.accelerator.run_backward:
            return super().grad(outputs, inputs, **kwargs)
        return skipped_grad(outputs, inputs)


def traced_config(cfg: Config) -> Config:
    """``cfg`` as traced: no weights read from files (pretrained weights give the same shapes)."""
    out = copy.deepcopy(cfg)
    out.model = dataclasses.replace(out.model, pretrained=False, pretrained_path="")
    return get_method(cfg.method).plan_config(out)


def first_batch(spec: LoaderSpec) -> Any:
    """A batch of the loader's shapes and dtypes, real, on the CPU: its dataset's first item (through the
    real transforms and views) collated as often as the loader's first batch holds samples. One item
    instead of a batch of them: the images are black anyway, and a TCL batch of 1,024 samples would
    otherwise cost 3,072 augmentations."""
    n = spec.batch_size if spec.drop_last else min(spec.batch_size, len(spec.dataset))
    batch = default_collate([spec.dataset[0]] * n)
    return spec.dataset.finish_batch(batch) if hasattr(spec.dataset, "finish_batch") else batch


def phase_problem(phase: Phase) -> str | None:
    """Why a phase cannot form a batch, or None."""
    for name, spec in phase.loaders.items():
        if spec.drop_last and len(spec.dataset) < spec.batch_size:
            return (f"a batch of {spec.batch_size} exceeds the {len(spec.dataset)} samples of phase {phase.name!r}"
                    + (f" (loader {name!r})" if name else "") + "; lower train.batch_size")
    return None


def phase_steps(phase: Phase) -> int:
    """Optimizer steps of the phase in one epoch (one process), as the engine counts them."""
    if phase.steps is not None:
        return phase.steps
    spec = next(iter(phase.loaders.values()))
    whole, part = divmod(len(spec.dataset), spec.batch_size)
    return whole + (part > 0 and not spec.drop_last)


def _held(method: Method) -> tuple[list[nn.Module], list[Tensor]]:
    """The networks and tensors a method holds besides the engine's (MLNT's teacher, TCL's w)."""
    modules, tensors = [], []
    for key, value in vars(method).items():
        if key == "ctx":
            continue
        if isinstance(value, nn.Module):
            modules.append(value)
        else:
            tensors += list(tensors_in(value))
    return modules, tensors


class RunTracer:
    """Traces runs of one config under different ``Settings``; the batches are made once.

    ``device``: the fake device ("cpu" for memory; "cuda" with ``backward=False`` checks device
    placement). ``keep_grads``: gradients exist (zeroed) before the step, as in ``bench/step_memory.py``;
    ``cpu_workspace``: count the CPU convolutions' own buffers (a prediction of a CPU run).
    """

    def __init__(self, cfg: Config, meta: DatasetMeta | None = None, *, device: str = "cpu", backward: bool = True,
                 keep_grads: bool = False, cpu_workspace: bool = False) -> None:
        self.method_cls = get_method(cfg.method)
        self.meta = meta or dataset_meta(cfg)
        self.cfg = traced_config(cfg)
        self.data = synthetic_data(self.meta, cfg.seed)
        self.device, self.backward, self.keep_grads, self.cpu_workspace = device, backward, keep_grads, cpu_workspace
        self.base = Settings.of(cfg)
        self._batches: dict[tuple[str, ...], Any] = {}
        self._runs: dict[Settings, RunTrace] = {}

    def run(self, settings: Settings | None = None) -> RunTrace:
        settings = settings or self.base
        if settings not in self._runs:
            with torch.random.fork_rng(devices=[]), warnings.catch_warnings(), fake_module_moves():
                warnings.simplefilter("ignore")  # e.g. MLNT's warning that its feature network is untrained
                self._runs[settings] = self._trace(settings)
        return self._runs[settings]

    # -- building ------------------------------------------------------------------------------
    def _build(self, cfg: Config, fake: FakeTensorMode) -> Method:
        acc = TraceAccelerator(self.device, cfg.train.mixed_precision, self.backward)
        with fake, torch.device(self.device):
            networks = build_networks(cfg, self.method_cls, self.meta)
        for net in networks.values():
            acc.prepare_model(net)
        optimizers = build_optimizers(cfg, networks, 0.1)  # outside: bitsandbytes builds real quantisation maps
        ctx = TraceContext(cfg, acc, networks, optimizers, self.data, Path("plan-trace"),
                           micro_batches=cfg.train.gradient_accumulation_steps)
        with fake:
            if self.backward:  # the state a step finds from the run's second step on
                for opt in optimizers.values():
                    for group in opt.param_groups:
                        for p in group["params"]:
                            p.grad = torch.zeros_like(p)
                    opt.step()
                    opt.zero_grad(set_to_none=not self.keep_grads)
            return self.method_cls(ctx)

    def _fake_batch(self, key: tuple[str, ...], specs: dict[str, LoaderSpec], fake: FakeTensorMode) -> Any:
        if key not in self._batches:
            parts = {name: first_batch(spec) for name, spec in specs.items()}
            self._batches[key] = parts[""] if list(parts) == [""] else parts

        def to_fake(obj: Any) -> Any:
            if isinstance(obj, Tensor):
                return fake.from_tensor(obj).to(self.device)
            if isinstance(obj, dict):
                return {k: to_fake(v) for k, v in obj.items()}
            if isinstance(obj, (list, tuple)):
                return [to_fake(v) for v in obj]
            return obj

        with fake:
            return to_fake(self._batches[key])

    # -- tracing -------------------------------------------------------------------------------
    def _trace(self, settings: Settings) -> RunTrace:
        cfg = settings.apply(self.cfg)
        fake = FakeTensorMode(allow_non_fake_inputs=True)
        method = self._build(cfg, fake)
        run = RunTrace(settings)
        for kind in self.method_cls.plan_epochs(cfg):
            method.prepare_plan(kind.epoch)  # on real tensors: host-side state (e.g. a division)
            self._trace_steps(run, method, kind, cfg, fake)
            for p in method.plan_passes(kind.epoch):
                run.passes.append(self._trace_pass(method, kind.label, kind.count, p, fake))
        for p in self._evaluation(method, cfg):
            run.passes.append(self._trace_pass(method, EVERY_EPOCH, cfg.train.epochs, p, fake))
        return run

    def _trace_steps(self, run: RunTrace, method: Method, kind: PlanEpoch, cfg: Config, fake: FakeTensorMode) -> None:
        phases = method.epoch_plan(kind.epoch)
        problems = {phase.name: phase_problem(phase) for phase in phases}
        run.problems += [p for p in problems.values() if p and p not in run.problems]
        counts = {phase.name: 0 if problems[phase.name] else phase_steps(phase) for phase in phases}
        offset = 0
        for phase in phases:
            if problems[phase.name]:
                continue
            batch = self._fake_batch((kind.label, phase.name), phase.loaders, fake)
            info = StepInfo(kind.epoch, offset, kind.global_step, sum(counts.values()), phase.name, 0,
                            counts[phase.name], phase.role, phase.info)
            modules, state = _held(method)
            with fake:
                t = trace(f"{kind.label}: {phase.name}", functools.partial(self._step, method, phase, batch, info, cfg),
                          modules=[*method.ctx.models.values(), *modules], optimizers=method.ctx.optimizers.values(),
                          batch=batch, state=state, cpu_workspace=self.cpu_workspace)
            run.steps.append(StepTrace(kind.label, phase.name, counts[phase.name], kind.count, t))
            offset += counts[phase.name]

    def _step(self, method: Method, phase: Phase, batch: Any, info: StepInfo, cfg: Config) -> None:
        """One optimizer step as the engine takes it (``engine/trainer.py``'s ``_optimizer_step``)."""
        ctx = method.ctx
        for net in ctx.models.values():
            net.train()
        method.training_step(batch, info)
        names = phase.optimizers or tuple(ctx.optimizers)
        if cfg.optim.grad_clip > 0 and self.backward:
            ctx.accelerator.clip_grad_norm_([p for n in names for p in ctx.models[n].parameters()], cfg.optim.grad_clip)
        for name in names:
            ctx.optimizers[name].step()
        for opt in ctx.optimizers.values():
            opt.zero_grad(set_to_none=not self.keep_grads)
        method.after_optimizer_step(dataclasses.replace(info, step_in_epoch=info.step_in_epoch + 1,
                                                        global_step=info.global_step + 1, phase_step=1))

    def _trace_pass(self, method: Method, kind: str, epochs: int, p: PlanPass, fake: FakeTensorMode) -> PassTrace:
        batch = self._fake_batch((kind, p.label), {"": LoaderSpec(p.dataset, p.batch_size, False, False)}, fake)
        modules, state = _held(method)
        networks = [*method.ctx.models.values(), *modules]

        def forward() -> None:
            modes = [m.training for m in networks]
            for m in networks:
                m.eval()
            with torch.no_grad():
                p.forward(batch)
            for m, mode in zip(networks, modes):
                m.train(mode)

        with fake:
            t = trace(f"{p.label}" if kind == EVERY_EPOCH else f"{kind}: {p.label}", forward, modules=networks,
                      optimizers=method.ctx.optimizers.values(), batch=batch, state=state,
                      cpu_workspace=self.cpu_workspace)
        return PassTrace(kind, p.label, len(p.dataset), int(batch["index"].shape[0]), p.per_epoch, epochs, t)

    def _evaluation(self, method: Method, cfg: Config) -> list[PlanPass]:
        """The engine's evaluation: every model of ``eval_models`` on val and test, every ``eval_every``
        epochs and at the end (``per_epoch``: the run's average)."""
        epochs, every = cfg.train.epochs, cfg.train.eval_every
        evaluations = sum(1 for e in range(1, epochs + 1) if e % every == 0 or e == epochs)
        models = method.eval_models()

        def forward(batch: dict[str, Any]) -> list[Tensor]:
            return [m(batch["image"]).logits.argmax(1) for m in models.values()]

        return [PlanPass(f"evaluation ({split})", dataset, forward, cfg.train.eval_batch_size, evaluations / epochs)
                for split, dataset in (("val", self.data.val), ("test", self.data.test)) if dataset is not None]

