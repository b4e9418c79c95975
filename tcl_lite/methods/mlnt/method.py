"""MLNT: meta-learning noise-tolerant training (Li et al., CVPR 2019), following the authors' code.

Three networks of one architecture: the **student** (the engine's model, trained), the **teacher**
(an EMA of the student's parameters, evaluated next to it) and a frozen **feature network** (a CE
checkpoint, ``mlnt.feature_checkpoint``) that only finds neighbours for synthetic labels.

One step, per micro-batch (``train.gradient_accumulation_steps``; every loss scaled by 1/n):

1. ``logits = student(x)``; CE on the noisy labels; backward, keeping the graph G0 when the meta
   loss is on (the fast steps differentiate these logits again).
2. Past iteration ``start_iter`` of the first epoch (always later; schedules in ``ema.py``): teacher
   EMA (once per optimizer step), ``p_t = softmax(teacher(x))`` (teacher in train mode, as the
   reference) and the feature network's features (eval mode), both without a graph. Then for each
   of ``num_synthetic`` label sets (neighbour relabelling, ``synthetic_labels.py``): the fast loss
   CE(logits, synthetic labels), its gradient with ``create_graph=True`` (second order, the
   reference) or detached (``first_order``), fast weights ``params - meta_lr * grad``,
   ``fast_logits`` through ``torch.func.functional_call``, and the consistency
   KL(p_t || softmax(fast_logits)) (``nn.KLDivLoss()``'s mean over all elements).

Memory, what is alive when: the reference sums the ten consistencies and back-propagates once, so
ten second-order graphs (each the gradient graph plus a fast forward, several times a forward) are
alive together. Here each set's term, scaled by ``alpha / num_synthetic``, is back-propagated as
soon as it exists, and the set's tensors are dropped when ``_synthetic_set`` returns: at any time
G0 plus ONE set's graph is alive. The gradient is the same, since the gradient of a sum is the
sum of the gradients. G0 is retained only until the last set's backward (second order) or the last
fast gradient (first order: the consistency graph does not reach G0). Activation checkpointing
shrinks G0 and the fast forward, but the fast gradient's double-backward graph keeps the stages'
recomputed activations, so for second-order MLNT it saves little (~8% of a ResNet-50 step's peak,
bench/mlnt_memory.py); the per-set backward is what makes the step fit.

Mixed precision: the fast forwards call the unwrapped student, so they are wrapped in
``accelerator.autocast()`` explicitly; under fp16 the fast gradient is taken of the loss times the
GradScaler's scale (and divided back), so fp16 activation gradients do not underflow; an overflow
gives inf gradients, which the scaler detects and skips as for any step.

Data parallelism: a second-order backward through ``functional_call`` reaches the parameters
outside DDP's reducer, and one forward has several backwards, which DDP cannot sync. So under
several processes every forward and backward runs under ``no_sync`` and, after the last
micro-batch, the gradients are averaged with ``accelerator.reduce(..., "mean")`` -- the same
result as DDP's all-reduce. Buffers (BatchNorm statistics, also updated by the fast forwards and
the teacher's train-mode forward) are then broadcast from process 0, as DDP's ``broadcast_buffers``
would, so every process holds the same student and teacher (and checkpoints resume exactly).

Differences from the reference, each deliberate: (1) it validates student and teacher every 1000
iterations on Clothing1M's clean validation set and tests the better one; here both are evaluated on
the test set every ``train.eval_every`` epochs, and ``checkpoint.best_metric: best_test_acc`` keeps the
better on the *test* set (no separate validation list; a selection on test accuracy is optimistic).
(2) a chosen sample's neighbours exclude the sample itself explicitly, where the reference skips
the nearest of k+1 (which is not the sample when another has identical features). (3) mixed
precision and data parallelism, which the reference does not have (see above).

Neighbours are searched within each micro-batch on each process (the per-process batch split
into ``gradient_accumulation_steps`` parts): with a micro-batch of m samples, ``num_neighbors``
is capped at m - 1. BatchNorm statistics are per micro-batch too, as for every method here.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn
from torch.func import functional_call

from tcl_lite.algorithms.accumulate import batch_size_of
from tcl_lite.checkpoints.finder import find_checkpoint
from tcl_lite.errors import CheckpointError, ModelError, NoCheckpointError
from tcl_lite.methods.base import Batch, Method, StateDict, StepInfo, TrainContext
from tcl_lite.methods.mlnt.config import MLNTConfig
from tcl_lite.methods.mlnt.ema import alpha_at, ema_decay_at, ema_update_, meta_active
from tcl_lite.methods.mlnt.synthetic_labels import neighbour_relabel
from tcl_lite.methods.planning import PlanEpoch
from tcl_lite.models.layout import check_checkpoint_layout
from tcl_lite.models.network import Network, build_model

_TEACHER = "teacher."


def consistency_loss(p_teacher: Tensor, fast_logits: Tensor) -> Tensor:
    """``nn.KLDivLoss()(log_softmax(fast_logits), p_teacher)``: mean over all B x K elements.

    Written out (xlogy gives 0 where p is 0, as kl_div does) because ``F.kl_div(reduction="mean")``
    warns at every call that this is not the batch mean -- which is what the reference uses.
    """
    log_q = F.log_softmax(fast_logits.float(), dim=1)
    return (torch.special.xlogy(p_teacher, p_teacher) - p_teacher * log_q).mean()


def resolve_feature_checkpoint(spec: str, log: Any = print) -> Path:
    """``mlnt.feature_checkpoint`` -> the ``model.safetensors`` to load.

    Accepts a ``.safetensors`` file, a checkpoint folder holding ``model.safetensors`` (verified
    against its manifest when it has one), or a run directory / ``checkpoints`` folder, whose
    newest checkpoint that verifies is used.
    """
    # Imported here: the engine package imports the methods package.

    key = f"mlnt.feature_checkpoint={spec!r}"
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix != ".safetensors":
            raise CheckpointError(f"{key}: {path} is not a .safetensors file; give a tcl_lite checkpoint "
                                  "folder, a run directory or its model.safetensors")
        return path
    if not path.is_dir():
        raise CheckpointError(f"{key}: no such file or directory; give the run directory of a CE run, one "
                              "of its checkpoint folders or a model.safetensors. Train it first, e.g. python "
                              "train.py --config <this preset> method=ce "
                              f"output_dir={spec}")
    try:
        return find_checkpoint(path, "final", log=log, manifest_optional=True) / "model.safetensors"
    except NoCheckpointError:
        raise CheckpointError(f"{key}: {path} holds no model.safetensors and no valid step_* checkpoint "
                              "under checkpoints/; train the CE network first (method=ce)") from None


def load_matching(net: nn.Module, state: dict[str, Tensor], what: str) -> None:
    """``net.load_state_dict(state)`` with an error naming the first key that does not fit."""
    own = net.state_dict()
    # A checkpoint of a method with a projector (TCL) still has the encoder and classifier MLNT needs.
    state = {k: v for k, v in state.items() if not (k.startswith("projector.") and k not in own)}
    problems = ([(k, "missing from the checkpoint") for k in own if k not in state]
                + [(k, "not in this model") for k in state if k not in own]
                + [(k, f"shape {tuple(state[k].shape)} in the checkpoint, {tuple(own[k].shape)} here")
                   for k in own if k in state and state[k].shape != own[k].shape])
    if problems:
        key, why = problems[0]
        raise ModelError(f"{what} does not fit the model built from model.* (key {key!r}: {why}; "
                         f"{len(problems)} key(s) differ). Use the model.* settings of the run that "
                         "wrote it (its config.yaml), or a checkpoint of this architecture.")
    net.load_state_dict(state)


class _Autocast(nn.Module):
    """Evaluates a network under the run's autocast, as the prepared student is."""

    def __init__(self, net: nn.Module, accelerator: Any) -> None:
        super().__init__()
        self.net = net
        self.accelerator = accelerator

    def forward(self, x: Tensor) -> Any:
        with self.accelerator.autocast():
            return self.net(x)


class MLNT(Method):
    name = "mlnt"
    config = MLNTConfig
    presets = ("digits_mlnt", "clothing1m_mlnt")
    views = ("weak",)
    metric_labels = {"teacher_test_acc": "teacher test accuracy (MLNT)",
                     "teacher_val_acc": "teacher validation accuracy (MLNT)"}

    def __init__(self, ctx: TrainContext) -> None:
        super().__init__(ctx)
        self.mcfg = ctx.cfg.mlnt
        self.student = ctx.unwrapped_model()
        trained = [(n, p) for n, p in self.student.named_parameters() if p.requires_grad]
        self.names, self.params = [n for n, _ in trained], [p for _, p in trained]
        # The teacher starts as the student; its first EMA update copies the student anyway.
        self.teacher = self._frozen_copy(self.student.state_dict())
        self.teacher_updates = 0  # the reference's `init` flag: 0 = the next update copies
        self._teacher_step = -1  # global step of the last update
        self.feature_source = ""
        self.feature_net = self._feature_network(self.mcfg.feature_checkpoint)

    # -- networks ------------------------------------------------------------------------------
    def _frozen_copy(self, state: dict[str, Tensor], what: str = "the student's weights") -> Network:
        """A network of the student's architecture on the device, without gradients."""
        data = self.ctx.data
        # pretrained=False: the weights come from ``state``, no need to read ImageNet weights again.
        net = build_model(dataclasses.replace(self.cfg.model, pretrained=False), data.num_classes,
                          in_channels=data.channels, image_size=data.image_size,
                          spec=next(iter(self.model_specs(self.cfg).values())))  # the student's spec
        load_matching(net, state, what)
        return net.to(self.ctx.device).requires_grad_(False)

    def _feature_network(self, spec: str) -> Network:
        if not spec:
            warnings.warn("mlnt.feature_checkpoint is empty: the frozen feature network that picks the "
                          "neighbours of synthetic labels is the student's INITIAL weights, not a trained "
                          "CE model as in the reference. Train one first (method=ce) and set "
                          "mlnt.feature_checkpoint to its run directory.", UserWarning, stacklevel=3)
            return self._frozen_copy(self.student.state_dict()).eval()
        path = resolve_feature_checkpoint(spec, self.ctx.print)
        return self._load_feature_network(path)

    def _load_feature_network(self, path: Path) -> Network:
        check_checkpoint_layout(path.parent, self.cfg.model.arch)  # a CE run of the earlier network
        try:
            weights = load_file(str(path))
        except (SafetensorError, OSError) as e:  # a damaged or truncated file
            raise CheckpointError(f"mlnt.feature_checkpoint: {path} cannot be read as safetensors ({e}); give an "
                                  "intact model.safetensors of a CE run (or its run directory)") from None
        net = self._frozen_copy(weights, f"mlnt.feature_checkpoint {str(path)!r}")
        self.feature_source = str(path)
        return net.eval()  # as the reference: BatchNorm running statistics, no dropout

    # -- one optimizer step --------------------------------------------------------------------
    def training_step(self, batch: Batch, info: StepInfo) -> dict[str, Tensor]:
        it, epoch = info.global_step, info.epoch
        active = meta_active(it, epoch, self.mcfg)
        alpha = alpha_at(it, epoch, self.mcfg)
        # Once per optimizer step, before the teacher is used (as the reference). Not again when the
        # engine retries this step with more micro-batches after an out-of-memory error: the student
        # is unchanged, so the teacher already holds this step's update.
        if active and self._teacher_step != it:
            decay = 0.0 if self.teacher_updates == 0 else ema_decay_at(it, epoch, self.mcfg)
            ema_update_(self.teacher.parameters(), self.student.parameters(), decay)
            self.teacher_updates += 1
            self._teacher_step = it
        distributed = self.ctx.accelerator.num_processes > 1
        parts = self.ctx.split(batch)
        logs: dict[str, Tensor] = {}
        for i, mb in enumerate(parts):
            share = batch_size_of(mb) / batch_size_of(batch)
            # Under DDP no backward may sync (see the module docstring): gradients are averaged below.
            with self.ctx.sync_gradients(last=i == len(parts) - 1 and not distributed):
                terms = self._micro_step(mb, active, alpha, share)
            for k, v in terms.items():
                logs[k] = logs.get(k, 0.0) + v * share
        if distributed:
            self._sync_processes()
        return logs

    def _micro_step(self, batch: Batch, active: bool, alpha: float, scale: float) -> dict[str, Tensor]:
        x, y = batch["image"], batch["label"]
        logits = self.ctx.model(x).logits.float()
        ce = F.cross_entropy(logits, y)
        self.ctx.accelerator.backward(ce * scale, retain_graph=active)
        terms = {"ce": ce.detach(), "noisy_acc": (logits.argmax(1) == y).float().mean()}
        if not active:
            zero = torch.zeros((), device=ce.device)
            return {"loss": ce.detach(), **terms, "consistency": zero, "alpha": zero}
        with torch.no_grad(), self.ctx.accelerator.autocast():
            self.teacher.train()  # as the reference: batch statistics (its BN stats are its own)
            p_teacher = F.softmax(self.teacher(x).logits.float(), dim=1)
            features = self.feature_net(x).features.float()
        k = self.mcfg.num_synthetic
        total = torch.zeros((), device=ce.device)
        for s in range(k):
            total += self._synthetic_set(x, y, logits, features, p_teacher, alpha * scale / k, last=s == k - 1)
        consistency = total / k
        return {"loss": ce.detach() + alpha * consistency, **terms, "consistency": consistency,
                "alpha": torch.tensor(alpha, device=ce.device)}

    def _synthetic_set(self, x: Tensor, y: Tensor, logits: Tensor, features: Tensor, p_teacher: Tensor,
                       weight: float, last: bool) -> Tensor:
        """One synthetic label set: fast step, consistency, and its backward (``weight`` * term) at once.

        Everything this creates (fast gradients, fast weights, the fast forward's graph) is local,
        so it is freed on return: one set's second-order graph is alive at a time.
        """
        cfg = self.mcfg
        synthetic = neighbour_relabel(y, features, cfg.perturb_ratio, cfg.num_neighbors).labels
        fast_loss = F.cross_entropy(logits, synthetic)
        # fp16: differentiate the scaled loss so activation gradients do not underflow (1.0 otherwise).
        scaler = self.ctx.accelerator.scaler
        loss_scale = scaler.get_scale() if scaler is not None else 1.0
        second_order = not cfg.first_order
        grads = self.ctx.grad(
            fast_loss * loss_scale, self.params, create_graph=second_order,
            # G0 is needed again by the next set's fast gradient, and by this set's second-order backward.
            retain_graph=second_order or not last, allow_unused=True, materialize_grads=True)
        step = cfg.meta_lr / loss_scale
        fast = {n: p - step * g for n, p, g in zip(self.names, self.params, grads, strict=True)}
        with self.ctx.accelerator.autocast():  # functional_call bypasses the prepared model's autocast
            fast_logits = functional_call(self.student, fast, (x,)).logits
        consistency = consistency_loss(p_teacher, fast_logits)
        # First order: this graph is the fast forward alone (the gradients are constants), never G0.
        self.ctx.accelerator.backward(consistency * weight, retain_graph=second_order and not last)
        return consistency.detach()

    @torch.no_grad()
    def _sync_processes(self) -> None:
        """Average the gradients over processes; give every process process 0's buffers."""
        acc = self.ctx.accelerator
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        flat = acc.reduce(torch.cat([g.reshape(-1) for g in grads]), "mean")
        for p, g in zip(self.params, flat.split([g.numel() for g in grads]), strict=True):
            p.grad = g.view_as(p).to(p.dtype)
        for net in (self.student, self.teacher):
            for buf in net.buffers():
                torch.distributed.broadcast(buf, src=0)

    # -- label issues ----------------------------------------------------------------------------
    @classmethod
    def label_issue_scores(cls, scoring: Any) -> tuple[np.ndarray, np.ndarray]:
        """The self-confidence of the teacher (the EMA model MLNT evaluates and reports)."""
        teacher = {k.removeprefix(_TEACHER): v for k, v in scoring.method_state().items() if k.startswith(_TEACHER)}
        return scoring.self_confidence({"model": teacher} if teacher else None)  # none saved: the student's

    # -- hooks ---------------------------------------------------------------------------------
    def before_training(self, resumed: bool) -> dict[str, float]:
        source = self.feature_source or "the student's initial weights (mlnt.feature_checkpoint is empty)"
        self.ctx.print(f"MLNT: feature network from {source}; {self.mcfg.num_synthetic} synthetic sets, "
                       f"{'first' if self.mcfg.first_order else 'second'}-order fast step")
        return {}

    def eval_models(self) -> dict[str, nn.Module]:
        return {"": self.ctx.model, "teacher": _Autocast(self.teacher, self.ctx.accelerator)}

    def after_evaluation(self, metrics: dict[str, float]) -> dict[str, float]:
        """The best of student and teacher per split (``checkpoint.best_metric: best_val_acc``; the test
        split's ``best_test_acc`` is only reported)."""
        return {f"best_{split}_acc": max(metrics[f"{split}_acc"], metrics[f"teacher_{split}_acc"])
                for split in ("val", "test") if f"{split}_acc" in metrics and f"teacher_{split}_acc" in metrics}

    # -- planning: the meta step (the first start_iter steps, plain CE, are planned as meta steps) --
    @classmethod
    def plan_epochs(cls, cfg: Any) -> list[PlanEpoch]:
        return [PlanEpoch("meta", 0, cfg.train.epochs, global_step=cfg.mlnt.start_iter + 1)]

    @classmethod
    def plan_config(cls, cfg: Any) -> Any:
        """The feature network is traced as built from ``model.*``: its checkpoint need not exist yet."""
        traced = copy.deepcopy(cfg)
        traced.mlnt.feature_checkpoint = ""
        return traced

    def prepare_plan(self, epoch: int) -> None:
        self.teacher_updates = 1  # past the first EMA update, which copies the student

    # -- checkpoint state ----------------------------------------------------------------------
    def state_dict(self) -> StateDict:
        state: StateDict = {_TEACHER + k: v for k, v in self.teacher.state_dict().items()}
        state["teacher_updates"] = self.teacher_updates
        state["feature_checkpoint"] = self.feature_source
        return state

    def load_state_dict(self, state: StateDict) -> None:
        teacher = {k.removeprefix(_TEACHER): v for k, v in state.items() if k.startswith(_TEACHER)}
        load_matching(self.teacher, teacher, "the checkpoint's MLNT teacher")
        self.teacher_updates = int(state["teacher_updates"])
        saved = state.get("feature_checkpoint", "")
        if saved != self.feature_source:
            if saved and Path(saved).is_file():
                # The run directory given may have newer checkpoints now: keep the run's own features.
                self.ctx.print(f"MLNT: resuming with the run's feature network {saved} "
                               f"(mlnt.feature_checkpoint now resolves to {self.feature_source or 'none'})")
                self.feature_net = self._load_feature_network(Path(saved))
            else:
                warnings.warn(f"MLNT: the run used the feature network {saved or 'of the initial weights'}, "
                              f"which is not available; continuing with {self.feature_source or 'the initial'}"
                              " weights: the resumed run is not exactly the uninterrupted one.",
                              UserWarning, stacklevel=2)
