"""DivideMix: Learning with Noisy Labels as Semi-supervised Learning (Li, Socher, Hoi, ICLR 2020).

Follows the authors' code (LiJunnan1992/DivideMix, Train_cifar.py); the facts are in the repository's
``shared/reference/dividemix.md``. Two networks of one architecture (``net1``, ``net2``), each with its
own optimizer, trained in turn within every epoch (the engine's phases):

* warm-up (``dividemix.warmup_epochs``): plain CE on the noisy labels at twice the batch, one pass per
  network; with asymmetric noise plus the confidence penalty (``warmup_penalty``);
* then, at the start of each epoch, co-divide (``codivide.py``): each network's per-sample CE loss over
  the training set (test transform, eval mode), min-max normalised, optionally averaged over the last
  ``loss_history`` epochs, a 2-component GMM, ``w`` = the clean component's posterior; each network is
  trained on the division made by the OTHER network: labeled ``w > p_threshold`` (with its ``w``) and
  unlabeled the rest; one pass over the labeled set, the unlabeled loader cycled;
* one step of network A (the other, B', fixed in eval mode): co-guessing of the unlabeled targets
  (mean softmax of A and B' on both views, sharpened), co-refinement of the labeled ones
  (``w * y + (1 - w) * mean softmax of A``, sharpened), MixMatch with ``l ~ Beta(4, 4)``,
  ``l = max(l, 1 - l)``, one permutation and ONE forward of the 4B mixed images; ``loss = Lx +
  lambda_u(t) * Lu + penalty`` (``dividemix_losses.py``), ``lambda_u`` ramped over ``rampup_epochs``;
* test prediction: the argmax of the sum of both networks' logits (``SumOfLogits``).

Memory: with ``train.gradient_accumulation_steps > 1`` the mixed forward runs in micro-batches through
the gradient cache (``gradient_cache.py``), so the loss (its uniform-prior penalty couples the whole
batch) and its gradient are the full batch's; each micro-batch takes the same share of x1, x2, u1, u2.
BatchNorm statistics are then per micro-batch, as for every method here.

Differences from the reference, each deliberate: (1) randomness comes from torch's CPU generator
(MixMatch's lambda and permutation; the reference draws lambda with numpy), which checkpoints save, and
the GMM's ``random_state`` is fixed from (seed, epoch, network), so a resumed run is the uninterrupted
one; (2) a side of the division that is empty (possible early in training or at low noise; the
reference stops with an error there) is replaced by the other side, with a message; (3) mixed
precision, data parallelism (each process its share of both sets; the co-divide sees every sample once)
and micro-batches, which the reference does not have. The reference runs ``num_epochs + 1`` epochs
(0..300); the presets train the paper's 300.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tcl_lite.algorithms.accumulate import accumulate
from tcl_lite.algorithms.gmm_detector import detection_metrics
from tcl_lite.algorithms.gradient_cache import cached_backward
from tcl_lite.algorithms.trust import TrustSignals
from tcl_lite.data.datasets import mix_seed
from tcl_lite.data.subset import SampleSubset
from tcl_lite.errors import CheckpointError
from tcl_lite.methods.base import Batch, LoaderSpec, Method, ModelSpec, Phase, StateDict, StepInfo, TrainContext
from tcl_lite.methods.dividemix.codivide import clean_probability, division_for, normalise_losses
from tcl_lite.methods.dividemix.config import DivideMixConfig
from tcl_lite.methods.dividemix.losses import (
    co_guess,
    co_refine,
    confidence_penalty,
    dividemix_terms,
    draw_mix_lambda,
    lambda_u_at,
    mixmatch,
)
from tcl_lite.methods.per_sample import per_sample_pass
from tcl_lite.methods.planning import PlanPass
from tcl_lite.models.network import NetworkOutput

NETS = ("net1", "net2")


class SumOfLogits(nn.Module):
    """DivideMix's test prediction: the sum of the two networks' logits."""

    def __init__(self, net1: nn.Module, net2: nn.Module) -> None:
        super().__init__()
        self.net1, self.net2 = net1, net2

    def forward(self, x: Tensor) -> NetworkOutput:
        a, b = self.net1(x), self.net2(x)
        return NetworkOutput(a.logits.float() + b.logits.float(), None, a.features)


def _other(name: str) -> str:
    return NETS[1 - NETS.index(name)]


def _batch_losses(net: nn.Module, batch: Batch, features: bool = False) -> tuple[Tensor, ...]:
    """The co-divide's work on one batch: per-sample CE with the noisy label and the logits, float32 (and,
    with ``features``, the encoder's features, for the trust diagnostics' kNN checks)."""
    out = net(batch["image"])
    logits = out.logits.float()
    loss = F.cross_entropy(logits, batch["label"], reduction="none")
    return (loss, logits, out.features.float()) if features else (loss, logits)


class DivideMix(Method):
    name = "dividemix"
    config = DivideMixConfig
    presets = ("digits_dividemix", "cifar10_dividemix_sym20", "cifar10_dividemix_sym50", "cifar10_dividemix_sym80",
               "cifar10_dividemix_sym90", "cifar10_dividemix_asym40", "cifar100_dividemix_sym20",
               "cifar100_dividemix_sym50", "cifar100_dividemix_sym80", "cifar100_dividemix_sym90",
               "cifar10n_dividemix_aggre", "cifar10n_dividemix_rand1", "cifar10n_dividemix_worst",
               "cifar100n_dividemix")
    views = ("weak", "weak")
    warmup_setting = "dividemix.warmup_epochs"
    after_warmup = "MixMatch"
    normalization = "dividemix"  # its reference's CIFAR mean/std (data.normalization=auto)
    metric_labels = {"ensemble_train_acc": "train accuracy of the summed prediction vs true labels (DivideMix)"}

    @classmethod
    def model_specs(cls, cfg: Any) -> dict[str, ModelSpec]:
        return {name: ModelSpec() for name in NETS}

    @classmethod
    def inference_model(cls, models: dict[str, nn.Module]) -> nn.Module:
        return SumOfLogits(models["net1"], models["net2"])

    def __init__(self, ctx: TrainContext) -> None:
        super().__init__(ctx)
        self.dcfg: DivideMixConfig = self.cfg.dividemix
        self.num_classes = ctx.data.num_classes
        self.noisy = torch.as_tensor(ctx.data.noisy_labels, dtype=torch.long)
        n = len(self.noisy)
        # O(N) state on the CPU, replaced at every co-divide (or restored on resume).
        self.prob = {name: torch.ones(n, dtype=getattr(torch, self.dcfg.gmm_dtype)) for name in NETS}
        self.history = {name: torch.zeros(0, n) for name in NETS}
        self.predicted = self.noisy.clone()
        self.divisions = 0
        self._warm_set = ctx.data.train_views(("weak",), ctx.device)
        self._two_views = ctx.data.train_views(self.views, ctx.device)
        self._num_iter: dict[str, int] = {}
        self._eval_loader: Any = None
        self._ensemble = SumOfLogits(ctx.models["net1"], ctx.models["net2"])

    # -- the epoch's phases ---------------------------------------------------------------------
    def begin_epoch(self, epoch: int) -> None:
        if epoch >= self.dcfg.warmup_epochs:
            self._co_divide(epoch)
            self._count_iterations()

    def _count_iterations(self) -> None:
        """The reference's ``num_iter`` of each network's MixMatch phase (lambda_u's ramp), from the
        current division: set at the co-divide and when the state is restored (a resumed epoch)."""
        per_step = self.cfg.train.batch_size * self.ctx.accelerator.num_processes
        for name in NETS:
            self._num_iter[name] = len(self._division(name)[0]) // per_step + 1

    def epoch_plan(self, epoch: int) -> list[Phase]:
        b = self.cfg.train.batch_size
        if epoch < self.dcfg.warmup_epochs:  # CE for each network in turn, at twice the batch
            warm = LoaderSpec(self._warm_set, 2 * b, drop_last=self._drop_tail(len(self._warm_set), 2 * b))
            return [Phase(f"warmup_{name}", {"": warm}, optimizers=(name,), role="warmup", info={"network": name})
                    for name in NETS]
        return [self._train_phase(name, b) for name in NETS]

    def _division(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(labeled, unlabeled) indices for network ``name``: the OTHER network's division; a side that
        is empty is replaced by the whole training set."""
        probs = {n: self.prob[n].numpy() for n in NETS}
        div = division_for(name, probs, self.dcfg.p_threshold)
        labeled, unlabeled = div.labeled_indices, div.unlabeled_indices
        if len(labeled) == 0 or len(unlabeled) == 0:
            labeled = unlabeled = np.arange(len(self.noisy))
        return labeled, unlabeled

    def _drop_tail(self, n: int, b: int, keep: bool | None = None) -> bool:
        """drop_last for a loader of ``n`` samples at ``b`` per process: the reference's loaders keep their last
        partial batch, unless it would hold fewer than 2 samples per process (BatchNorm cannot train on one);
        ``keep``: default ``dividemix.loader_tails`` (the labeled loader always keeps its tail)."""
        procs = self.ctx.accelerator.num_processes
        tail = n % (b * procs)
        if keep is None:
            keep = self.dcfg.loader_tails == "keep"
        return (not keep and n >= b * procs) or 0 < tail < 2 * procs < n

    def _train_phase(self, name: str, b: int) -> Phase:
        labeled, unlabeled = self._division(name)
        # One pass over the labeled set, the unlabeled set cycled (a new pass, reshuffled, when one ends).
        return Phase(f"train_{name}", {
            "labeled": LoaderSpec(SampleSubset(self._two_views, labeled), b,
                                  drop_last=self._drop_tail(len(labeled), b, keep=True)),
            "unlabeled": LoaderSpec(SampleSubset(self._two_views, unlabeled), b,
                                    drop_last=self._drop_tail(len(unlabeled), b))},
            optimizers=(name,), role="mixmatch", info={"network": name})

    # -- one step ---------------------------------------------------------------------------------
    def training_step(self, batch: Batch, info: StepInfo) -> dict[str, Tensor]:
        name = info.phase_info["network"]
        self.ctx.models[name].train()
        if info.role == "warmup":
            return self._warmup_step(name, batch)
        return self._mixmatch_step(name, batch, info)

    def _penalty_on(self) -> bool:
        setting = self.dcfg.warmup_penalty
        return setting == "on" or (setting == "auto" and self.cfg.data.noise_type == "asymmetric")

    def _warmup_step(self, name: str, batch: Batch) -> dict[str, Tensor]:
        net, penalty = self.ctx.models[name], self._penalty_on()

        def loss_fn(mb: Batch) -> tuple[Tensor, dict[str, Tensor]]:
            logits = net(mb["image"]).logits.float()
            ce = F.cross_entropy(logits, mb["label"])
            if not penalty:
                return ce, {"ce": ce.detach()}
            neg_entropy = confidence_penalty(logits)
            return ce + neg_entropy, {"ce": ce.detach(), "penalty": neg_entropy.detach()}

        return accumulate(self.ctx, batch, loss_fn)

    @torch.no_grad()
    def _targets(self, name: str, lab: Batch, unl: Batch) -> tuple[Tensor, Tensor]:
        """Co-refined labeled and co-guessed unlabeled targets (A in train mode, B' in eval mode)."""
        net, fixed = self.ctx.models[name], self.ctx.models[_other(name)]
        fixed.eval()
        (x1, x2), (u1, u2) = lab["image"], unl["image"]
        t = self.dcfg.temperature
        pu = co_guess([net(u1).logits, net(u2).logits, fixed(u1).logits, fixed(u2).logits], t)
        onehot = F.one_hot(lab["label"], self.num_classes).float()
        # float32 as the reference's `w_x.type(torch.FloatTensor)`
        w = self.prob[_other(name)][lab["index"].cpu()].to(onehot.device, onehot.dtype)
        px = co_refine(net(x1).logits, net(x2).logits, onehot, w, t)
        return px, pu

    def _mixmatch_step(self, name: str, batch: Batch, info: StepInfo) -> dict[str, Tensor]:
        lab, unl = batch["labeled"], batch["unlabeled"]
        tx, tu = self._targets(name, lab, unl)
        lam = draw_mix_lambda(self.dcfg.mix_alpha)  # before the permutation, as the reference
        groups = [*lab["image"], *unl["image"]]  # x1, x2, u1, u2
        inputs, targets = torch.cat(groups), torch.cat([tx, tx, tu, tu])
        perm = torch.randperm(inputs.shape[0]).to(inputs.device)
        mixed = mixmatch(inputs, targets, lam, perm)
        ramp_epoch = info.epoch + max(0, info.phase_step) / self._num_iter.get(name, max(1, info.phase_steps))
        lambda_u = lambda_u_at(ramp_epoch, self.dcfg.warmup_epochs, self.dcfg.lambda_u, self.dcfg.rampup_epochs)
        n_labeled = 2 * lab["image"][0].shape[0]

        def loss_fn(logits: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
            terms = dividemix_terms(logits, mixed.targets, n_labeled, self.num_classes)
            loss = terms.lx + lambda_u * terms.lu + terms.penalty
            return loss, {"loss": loss.detach(), "lx": terms.lx.detach(), "lu": terms.lu.detach(),
                          "penalty": terms.penalty.detach(), "lambda_u": torch.tensor(lambda_u)}

        return self._mixed_backward(self.ctx.models[name], mixed.inputs, [g.shape[0] for g in groups], loss_fn)

    def _mixed_backward(self, net: nn.Module, inputs: Tensor, groups: list[int], loss_fn: Any) -> dict[str, Tensor]:
        """One forward of the mixed inputs and the backward of ``loss_fn`` (all rows at once, or through
        the gradient cache in ``ctx.micro_batches`` parts of equal shares of every group)."""
        ctx, n = self.ctx, self.ctx.micro_batches
        if n == 1:
            loss, logs = loss_fn(net(inputs).logits)
            ctx.backward(loss)
            return logs
        starts = np.cumsum([0, *groups[:-1]])
        parts = [torch.cat([torch.arange(s, s + g)[j * g // n:(j + 1) * g // n] for s, g in zip(starts, groups)])
                 for j in range(n)]
        order = torch.cat(parts).to(inputs.device)
        inverse = torch.argsort(order)
        _, logs = cached_backward(
            [p.to(inputs.device) for p in parts], lambda idx: (net(inputs[idx]).logits,),
            lambda outs: loss_fn(outs[0][inverse]), backward=ctx.backward,
            sync_gradients=ctx.sync_gradients, stateful=net, device=ctx.device)
        return logs

    # -- co-divide --------------------------------------------------------------------------------
    @torch.no_grad()
    def _loss_pass(self, net: nn.Module, features: bool = False) -> tuple[np.ndarray, Tensor, Tensor | None]:
        """Per-sample CE with the noisy label [N], the logits [N, K] and (``features``) the encoder's
        features [N, d], over the training set."""
        if self._eval_loader is None:  # built once: the same ordered, sharded pass every epoch
            self._eval_loader = self.ctx.loader(self.ctx.data.train_eval())
        losses, logits, *f = per_sample_pass(self.ctx.accelerator, self._eval_loader, net,
                                             functools.partial(_batch_losses, features=features), len(self.noisy))
        return losses.numpy(), logits, (f[0] if f else None)

    def _co_divide(self, epoch: int) -> None:
        d, logits_sum = self.dcfg, torch.zeros(len(self.noisy), self.num_classes)
        features = None
        for i, name in enumerate(NETS):
            losses, logits, feats = self._loss_pass(self.ctx.models[name], features=i == 0)
            features = feats if i == 0 else features
            row = torch.from_numpy(normalise_losses(losses))[None]
            self.history[name] = torch.cat([self.history[name], row])[-d.loss_history:]
            self.prob[name] = torch.from_numpy(clean_probability(
                self.history[name].numpy(), max_iter=d.gmm_max_iter, tol=d.gmm_tol, reg_covar=d.gmm_reg_covar,
                seed=mix_seed(self.cfg.seed, epoch, i) % 2**32, dtype=d.gmm_dtype))
            logits_sum += logits
        self.predicted = logits_sum.argmax(1)
        self.divisions += 1
        self.pending_signals = self._trust_signals(logits_sum, features)
        labeled = [int((self.prob[_other(name)] > d.p_threshold).sum()) for name in NETS]
        self.ctx.print(f"DivideMix co-divide, epoch {epoch + 1}: labeled {labeled[0]} (net1's set, from net2) and "
                       f"{labeled[1]} (net2's, from net1) of {len(self.noisy)}"
                       + ("; a side is empty, so that network trains on every sample as both"
                          if 0 in labeled or len(self.noisy) in labeled else ""))

    # -- trust diagnostics -------------------------------------------------------------------------
    def _trust_signals(self, logits_sum: Tensor, features: Tensor | None) -> TrustSignals:
        """The co-divide's verdicts (``1 -`` the mean ``w``, the summed prediction); the second opinion is the
        two networks' divisions against each other; the kNN checks use net1's features."""
        w1, w2 = self.prob["net1"].numpy(), self.prob["net2"].numpy()
        noisy_p = 1.0 - (w1 + w2) / 2
        return TrustSignals(self.noisy.numpy(), noisy_p, self.predicted.numpy(), logits_sum.softmax(1).numpy(),
                            features, opinions={"net1's division": 1.0 - w1, "net2's division": 1.0 - w2})

    # -- planning: warm-up and MixMatch epochs, the latter with a co-divide pass per network --------
    def prepare_plan(self, epoch: int) -> None:
        if epoch >= self.dcfg.warmup_epochs:  # a division: every other sample labeled, by each network
            w = torch.from_numpy(np.arange(len(self.noisy)) % 2 == 0).float()
            self.prob = {name: w.clone() for name in NETS}
            self.divisions = 1

    def plan_passes(self, epoch: int) -> list[PlanPass]:
        if epoch < self.dcfg.warmup_epochs:
            return []
        data, size = self.ctx.data.train_eval(), self.cfg.train.eval_batch_size
        return [PlanPass(f"co-divide ({name})", data, functools.partial(_batch_losses, self.ctx.models[name]), size)
                for name in NETS]

    # -- metrics, evaluation ----------------------------------------------------------------------
    def after_epoch(self, epoch: int) -> dict[str, float]:
        if self.divisions == 0:
            return {}
        w = (self.prob["net1"] + self.prob["net2"]) / 2
        metrics = detection_metrics(w, self.predicted, self.ctx.data.noisy_labels, self.ctx.data.true_labels)
        if "label_correction_acc" in metrics:
            metrics["ensemble_train_acc"] = metrics.pop("label_correction_acc")
        return metrics

    def eval_models(self) -> dict[str, nn.Module]:
        return {"": self._ensemble}

    # -- per-sample verdicts ----------------------------------------------------------------------
    @classmethod
    def per_sample_outputs(cls, state: StateDict) -> dict[str, np.ndarray] | None:
        if "prob_net1" not in state or not state.get("divisions"):
            return None
        p1, p2 = state["prob_net1"].float().numpy(), state["prob_net2"].float().numpy()
        return {"clean_probability": (p1 + p2) / 2, "clean_probability_net1": p1, "clean_probability_net2": p2,
                "suggested_label": state["predicted_label"].long().numpy()}

    @classmethod
    def label_issue_scores(cls, scoring: Any) -> tuple[np.ndarray, np.ndarray]:
        """``1 - w`` (mean of the two networks') and the summed prediction; before the first co-divide,
        the self-confidence of the summed prediction."""
        out = cls.per_sample_outputs(scoring.method_state())
        if out is None:
            return scoring.self_confidence()
        return 1.0 - out["clean_probability"], out["suggested_label"]

    # -- checkpoint state ----------------------------------------------------------------------
    def state_dict(self) -> StateDict:
        state: StateDict = {"divisions": self.divisions, "predicted_label": self.predicted,
                            "history_rows": int(self.history["net1"].shape[0])}
        for name in NETS:
            state[f"prob_{name}"] = self.prob[name]
            if self.history[name].shape[0]:
                state[f"history_{name}"] = self.history[name]
        return state

    def load_state_dict(self, state: StateDict) -> None:
        n = len(self.noisy)
        if "prob_net1" not in state:  # (checkpoints of other methods are refused earlier)
            keys = ", ".join(sorted(state)) or "none"
            raise CheckpointError(f"the checkpoint holds no DivideMix state (it has {keys}); resume a DivideMix run "
                                  "from its own checkpoints")
        if tuple(state["prob_net1"].shape) != (n,):
            raise CheckpointError(f"DivideMix state has {tuple(state['prob_net1'].shape)[0]} samples, this run "
                                  f"{n}: the checkpoint is of another data set")
        rows = int(state["history_rows"])
        for name in NETS:
            self.prob[name] = state[f"prob_{name}"].cpu()  # float64 (gmm_dtype float64) or float32, as saved
            self.history[name] = state[f"history_{name}"].float().cpu() if rows else torch.zeros(0, n)
        self.predicted = state["predicted_label"].long().cpu()
        self.divisions = int(state["divisions"])
        self._count_iterations()  # what begin_epoch computed, for an epoch resumed midway

