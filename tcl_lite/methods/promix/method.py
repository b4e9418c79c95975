"""ProMix: Combating Label Noise via Maximizing Clean Sample Utility (Xiao et al., IJCAI 2023).

Follows the authors' code (Justherozen/ProMix @40d8378, Train_promix.py); the facts are in the repository's
``shared/reference/promix.md``. Two networks (``net1``, ``net2``: the reference's post-activation CIFAR
ResNet-18, ``model.arch=resnet18_cifar``), each with the primary head h (``model.head=linear``) and the
auxiliary pseudo head h_AP (``ModelSpec(heads={"pseudo": "linear"})``), trained together in every step:

* warm-up (``promix.warmup_epochs``): CE of h on the noisy labels (weak view) for both networks, plus each
  network's negative entropy on asymmetric noise; h_AP gets no gradient; the loader keeps its last partial
  batch, as the reference's;
* then, at the start of each epoch, the class-wise small-loss selection (CSS) of each network on its own:
  an eval-mode pass over the training set (test transform), per-sample CE of h with the noisy label, per
  noisy class the ``ceil(rho N / K)`` smallest (``rho`` on its schedule); no exchange between the networks;
* one step on B samples (weak x, RandAugment x', the noisy label): per network, MHCS adds the samples
  whose ``softmax(h(x))[y] > tau``, LGA (in the last ``start_expand`` epochs) the ones both networks agree
  on with confidence, up to ``lga_cap`` of the batch; every term of both heads on the debiased logits
  (CE on x, consistency on x', mixup with Beta(4, 4) and FMix on the clean weak images), the unlabeled
  term of h_AP with sharpened debiased pseudo-labels; the priors pi_l, pi_u move after the loss
  (``losses.py`` holds every formula);
* test prediction: what the reference reports (``promix.eval_output``, default network 1's h_AP, the only
  output of its accuracy log; ``net2_ap`` and ``mean_h``, the mean of both networks' h logits, are
  evaluated too).

The reference's single SGD over both networks is here one optimizer per network (the engine's), stepped
together in every step with the same hyperparameters: SGD's update is per parameter, so the updates are
identical (gradient clipping, when enabled, takes the norm over both networks, as one optimizer would).

Memory (``losses.py``, "Micro-batches"): the selection, targets, pseudo-labels, priors and mixing draws are
computed once per step on the whole batch, from a no-grad train-mode forward of x (BatchNorm statistics
left as they were, so that every forward with a graph updates them once, as the reference's forwards do);
then every forward runs in ``ctx.micro_batches`` parts, each part's terms (sums over its rows divided by
the whole batch's |C| or |U|) back-propagated at once, so only one part's graph is alive: the loss and its
gradient are the whole batch's, BatchNorm's batch statistics are those of each part (the named difference).
The planner (``plan_*`` hooks) traces the step with every sample of the batch clean (``step_targets``): the
sizes of the real selection depend on values its fake tensors do not have, and the whole batch is the largest.

Differences from the reference, by name: the mixing draws come from a generator seeded by (seed, epoch,
step, network, head), so a resumed run draws the same; the selection's ties and empty sets as ``losses.py``
says; the reference's projection MLP (in no loss) is not built; the reference runs epochs 0..600 with
``num_epochs`` 600, here ``train.epochs`` is that count (600: LGA from epoch 351, the cosine over 600) and
its extra last epoch 600 is not run.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch._subclasses.fake_tensor import unset_fake_temporarily

from tcl_lite.algorithms.accumulate import accumulate
from tcl_lite.algorithms.gmm_detector import detection_metrics
from tcl_lite.algorithms.trust import TrustSignals
from tcl_lite.data.datasets import mix_seed
from tcl_lite.errors import CheckpointError
from tcl_lite.methods.base import Batch, LoaderSpec, Method, ModelSpec, Phase, StateDict, StepInfo, TrainContext
from tcl_lite.methods.per_sample import per_sample_pass
from tcl_lite.methods.planning import PlanPass
from tcl_lite.methods.promix.config import ProMixConfig
from tcl_lite.methods.promix.losses import (
    HeadLogits,
    MixTargets,
    StepTargets,
    class_wise_small_loss,
    debias_probs,
    draw_mix,
    fmix,
    init_prior,
    lga_enabled,
    linear_ramp,
    mix_targets,
    mixup,
    promix_net_terms,
    rho_schedule,
    select_step,
    sharpen,
    unlabeled_weight,
    upcast,
    update_priors,
    warmup_net_terms,
)
from tcl_lite.models.encoder import KeepBuffers, batchnorm_buffers
from tcl_lite.models.network import NetworkOutput

NETS = ("net1", "net2")
HEADS = ("h", "ap")  # the primary head and the auxiliary pseudo head h_AP
PSEUDO = "pseudo"  # h_AP's name among the network's extra heads
OUTPUTS = ("net1_ap", "net2_ap", "mean_h")
TERMS = ("h_ce", "h_cr", "h_mix", "h_fmix", "ap_ce", "ap_cr", "ap_mix", "ap_fmix", "ap_u")


def _batch_losses(net: nn.Module, batch: Batch, features: bool = False) -> tuple[Tensor, ...]:
    """The selection pass's work on one batch: per-sample CE of h with the noisy label and the h logits (and,
    with ``features``, the encoder's features, for the trust diagnostics' kNN checks)."""
    out = net(batch["image"])
    logits = out.logits.float()
    loss = F.cross_entropy(logits, batch["label"], reduction="none")
    return (loss, logits, out.features.float()) if features else (loss, logits)


def head_logits(out: NetworkOutput, head: str) -> Tensor:
    """The logits of ``head`` (``h`` or ``ap``) in a network's output."""
    return out.logits if head == "h" else out.heads[PSEUDO]


class ReportedOutput(nn.Module):
    """A test output of the reference (eval mode, no debiasing): one network's h_AP, or the mean of both
    networks' h logits."""

    def __init__(self, nets: dict[str, nn.Module], which: str) -> None:
        super().__init__()
        if which not in OUTPUTS:
            raise ValueError(f"unknown ProMix output {which!r}; choose one of {', '.join(OUTPUTS)}")
        self.which = which
        self.nets = nn.ModuleDict({n: nets[n] for n in (NETS if which == "mean_h" else (which[:4],))})

    def forward(self, x: Tensor) -> NetworkOutput:
        outs = [net(x) for net in self.nets.values()]
        if self.which == "mean_h":
            logits = (outs[0].logits.float() + outs[1].logits.float()) / 2
        else:
            logits = outs[0].heads[PSEUDO].float()
        return NetworkOutput(logits, None, outs[0].features)


class ProMix(Method):
    name = "promix"
    config = ProMixConfig
    presets = ("digits_promix", "cifar10_promix_sym20", "cifar10_promix_sym50", "cifar10_promix_asym40",
               "cifar100_promix_sym20", "cifar100_promix_sym50", "cifar10n_promix_aggre", "cifar10n_promix_rand1",
               "cifar10n_promix_worst", "cifar100n_promix")
    views = ("weak", "randaugment")
    normalization = "promix"  # its reference's CIFAR mean/std (data.normalization=auto)
    warmup_setting = "promix.warmup_epochs"
    after_warmup = "ProMix"
    metric_labels = {"net1_ap_test_acc": "test accuracy of network 1's pseudo head h_AP (ProMix's reported output)",
                     "net2_ap_test_acc": "test accuracy of network 2's pseudo head h_AP (ProMix)",
                     "mean_h_test_acc": "test accuracy of the mean of both networks' h logits (ProMix)",
                     "css_fraction": "fraction of samples the class-wise small-loss selection keeps (ProMix)",
                     "debiased_train_acc": "train accuracy of the debiased prediction vs true labels (ProMix)"}

    @classmethod
    def model_specs(cls, cfg: Any) -> dict[str, ModelSpec]:
        return {name: ModelSpec(heads={PSEUDO: "linear"}) for name in NETS}

    @classmethod
    def inference_model(cls, models: dict[str, nn.Module]) -> nn.Module:
        """Network 1's h_AP: the output the reference's accuracy log records (``promix.eval_output``'s default)."""
        return ReportedOutput(models, "net1_ap")

    def __init__(self, ctx: TrainContext) -> None:
        super().__init__(ctx)
        self.pcfg: ProMixConfig = self.cfg.promix
        self.num_classes = ctx.data.num_classes
        self.noisy = torch.as_tensor(ctx.data.noisy_labels, dtype=torch.long)
        n = len(self.noisy)
        # O(N) state on the CPU, replaced at every selection (or restored on resume); the priors on the device.
        self.css = {name: torch.zeros(n, dtype=torch.bool) for name in NETS}
        self.predicted = self.noisy.clone()
        self.selections = 0
        self.priors = {f"{kind}_{name}": init_prior(self.num_classes, ctx.device) for name in NETS for kind in "lu"}
        self._warm_set = ctx.data.train_views(("weak",), ctx.device)
        self._two_views = ctx.data.train_views(self.views, ctx.device)
        self._eval_loader: Any = None
        self._outputs = {which: ReportedOutput(ctx.models, which) for which in OUTPUTS}
        self._plan_all_clean = False  # set by prepare_plan: the planner's steps take every sample as clean

    # -- the epoch's phases ---------------------------------------------------------------------
    def epoch_plan(self, epoch: int) -> list[Phase]:
        b = self.cfg.train.batch_size
        if epoch < self.pcfg.warmup_epochs:
            # The reference's warm-up loader keeps its last partial batch; one of fewer than 2 samples per
            # process is dropped (BatchNorm cannot train on one).
            procs = self.ctx.accelerator.num_processes
            tail = len(self._warm_set) % (b * procs)
            drop = 0 < tail < 2 * procs < len(self._warm_set)
            return [Phase("warmup", {"": LoaderSpec(self._warm_set, b, drop_last=drop)}, role="warmup")]
        return [Phase("train", {"": LoaderSpec(self._two_views, b)}, role="train")]  # drop_last, as the reference

    def begin_epoch(self, epoch: int) -> None:
        if epoch >= self.pcfg.warmup_epochs:
            self._select(epoch)

    # -- one step ---------------------------------------------------------------------------------
    def training_step(self, batch: Batch, info: StepInfo) -> dict[str, Tensor]:
        for net in self.ctx.models.values():
            net.train()
        if info.role == "warmup":
            return self._warmup_step(batch)
        return self._promix_step(batch, info)

    def _penalty_on(self) -> bool:
        setting = self.pcfg.warmup_penalty
        return setting == "on" or (setting == "auto" and self.cfg.data.noise_type == "asymmetric")

    def _warmup_step(self, batch: Batch) -> dict[str, Tensor]:
        """CE of h on the noisy labels, both networks in one backward. h_AP is kept in the graph at weight 0
        (so that data parallelism finds every parameter used) and its zero gradient dropped, so the optimizer
        skips it as the reference's does (no weight decay, no momentum)."""
        penalty = self._penalty_on()

        def loss_fn(mb: Batch) -> tuple[Tensor, dict[str, Tensor]]:
            total, logs = 0.0, {}
            for name in NETS:
                out = self.ctx.models[name](mb["image"])
                terms = warmup_net_terms(out.logits, mb["label"], penalty=penalty, batch_size=len(mb["label"]))
                total = total + terms["total"] + out.heads[PSEUDO].float().sum() * 0.0
                logs[f"{name}_ce"] = terms["ce"].detach()
                if penalty:
                    logs[f"{name}_penalty"] = terms["penalty"].detach()
            return total, logs

        logs = accumulate(self.ctx, batch, loss_fn)
        for name in NETS:
            for p in self.ctx.unwrapped_model(name).heads[PSEUDO].parameters():
                p.grad = None
        return logs

    @torch.no_grad()
    def _raw_logits(self, net: nn.Module, x: Tensor) -> Tensor:
        """h(x) in train mode for the whole batch, in the micro-batches of the step's own forwards (the same
        batch statistics, so the same logits); BatchNorm's running statistics are left unchanged."""
        with KeepBuffers(batchnorm_buffers(net)):
            return torch.cat([upcast(net(x[rows]).logits) for rows in self._row_parts(len(x), x.device)])

    def _promix_step(self, batch: Batch, info: StepInfo) -> dict[str, Tensor]:
        p, (x, xs), y = self.pcfg, batch["image"], batch["label"]
        raw = {name: self._raw_logits(self.ctx.models[name], x) for name in NETS}
        targets = self.step_targets(raw, y, batch, info)
        w = linear_ramp(info.epoch, p.w_ramp_epochs)
        beta = unlabeled_weight(info.epoch, weight=p.unlabeled_weight, epochs=p.unlabeled_epochs, debias_pl=p.debias_pl)
        logs: dict[str, Tensor] = {}
        for i, name in enumerate(NETS):
            terms = self._net_backward(name, self._draws(info, i, targets[name], x), x, xs, targets[name], w, beta)
            logs[name] = terms["total"]
            for k in TERMS:  # both networks' sums
                logs[k] = logs.get(k, 0.0) + terms[k]
        for name in NETS:  # after the loss, from the raw h(x) of the whole batch
            self.priors[f"l_{name}"], self.priors[f"u_{name}"] = update_priors(targets[name], raw[name],
                                                                               p.prior_momentum)
        logs["loss"] = logs["net1"] + logs["net2"]
        logs["clean"] = torch.tensor(sum(t.n_labeled for t in targets.values()) / (2 * len(y)))
        return logs

    def step_targets(self, raw: dict[str, Tensor], y: Tensor, batch: Batch, info: StepInfo) -> dict[str, StepTargets]:
        """Each network's selection of the step (MHCS, LGA), targets and pseudo-labels, from both raw h(x) of
        the whole batch (after ``prepare_plan`` of a ProMix epoch: the planner's, every sample clean)."""
        if self._plan_all_clean:
            return self._plan_targets(raw, y)
        p = self.pcfg
        lga = lga_enabled(info.epoch, self.cfg.train.epochs, p.start_expand)
        index = batch["index"].cpu()
        return {name: select_step(
            raw[name], raw[NETS[1 - i]], y, self.css[name][index].to(y.device), self.priors[f"l_{name}"],
            self.priors[f"u_{name}"], tau=p.tau, lga=lga, lga_cap=p.lga_cap, debias_pl=p.debias_pl,
            temperature=p.temperature) for i, name in enumerate(NETS)}

    def _plan_targets(self, raw: dict[str, Tensor], y: Tensor) -> dict[str, StepTargets]:
        """The planner's selection: every sample of the batch in C (one-hot y), the largest clean set, so the
        mixup and FMix forwards take the whole batch: the step's peak memory and FLOPs. (The real selection's
        sizes depend on the values, which the planner's fake tensors do not have.)"""
        p, k = self.pcfg, self.num_classes
        return {name: StepTargets(
            torch.ones_like(y, dtype=torch.bool), F.one_hot(y, k).float(),
            sharpen(debias_probs(raw[name], self.priors[f"u_{name}"], p.debias_pl), p.temperature), len(y), 0,
            self.priors[f"l_{name}"], self.priors[f"u_{name}"]) for name in NETS}

    def _draws(self, info: StepInfo, net_index: int, t: StepTargets, x: Tensor) -> dict[str, Any]:
        """Each head's mixup and FMix draws over the network's C, from a generator of (seed, epoch, step,
        network, head): a resumed step draws what the uninterrupted one drew."""
        p, (height, width) = self.pcfg, x.shape[-2:]
        draws = {}
        # Host-side numbers (numpy's FFT makes the FMix mask): drawn for real even under the planner's fake
        # tensors (a no-op otherwise).
        with unset_fake_temporarily():
            for j, head in enumerate(HEADS):
                g = torch.Generator().manual_seed(mix_seed(self.cfg.seed, info.epoch,
                                                           (info.step_in_epoch << 2) | (net_index << 1) | j))
                draws[head] = draw_mix(t.n_labeled, height, width, g, mixup_alpha=p.mixup_alpha,
                                       fmix_alpha=p.fmix_alpha, decay=p.fmix_decay)
        return draws

    def _net_backward(self, name: str, draws: dict[str, Any], x: Tensor, xs: Tensor, t: StepTargets, w: float,
                      beta: float) -> dict[str, Tensor]:
        """Every term of one network, forward and backward in parts: the (x, x') rows of each micro-batch,
        then each head's (mixup, FMix) rows of each micro-batch; gradients all-reduced on the last part only.
        Returns the whole-batch terms (detached) and the network's ``total``."""
        net, ctx = self.ctx.models[name], self.ctx
        clean = t.clean_rows()
        xc, tc = x[clean], t.targets[clean]
        mixed = {head: (mixup(xc, d.mixup_lam, d.mixup_perm), fmix(xc, d.fmix_mask, d.fmix_perm))
                 for head, d in draws.items()}
        mix_t = {head: mix_targets(tc, d) for head, d in draws.items()}
        parts = [("views", rows) for rows in self._row_parts(len(t.labeled), x.device)]
        parts += [(head, rows) for head in HEADS for rows in self._row_parts(len(clean), x.device)]
        logs: dict[str, Tensor] = {}
        for i, (kind, rows) in enumerate(parts):
            with ctx.sync_gradients(last=i == len(parts) - 1, models=net):
                terms, unused = self._part_terms(net, kind, rows, (x, xs), mixed, t, mix_t, w, beta)
                ctx.backward(terms["total"] + unused)
            for k, v in terms.items():
                logs[k] = logs.get(k, 0.0) + v.detach()
        return logs

    def _row_parts(self, count: int, device: torch.device) -> tuple[Tensor, ...]:
        """``count`` rows in ``ctx.micro_batches`` parts (``chunk``'s sizes, as the batch's split), but none of a
        single row where there are more (BatchNorm cannot train on one sample of 1x1 maps); none when empty."""
        if count == 0:
            return ()
        return torch.arange(count, device=device).chunk(max(1, min(self.ctx.micro_batches, count // 2)))

    def _part_terms(self, net: nn.Module, kind: str, rows: Tensor, views: tuple[Tensor, Tensor],
                    mixed: dict[str, tuple[Tensor, Tensor]], t: StepTargets, mix_t: dict[str, MixTargets], w: float,
                    beta: float) -> tuple[dict[str, Tensor], Tensor]:
        """One part's share of the terms (``promix_net_terms`` on its rows, empty elsewhere) and, at weight 0,
        the head its forwards compute but no term of the part uses (data parallelism: every parameter used)."""
        none = rows[:0]
        empty = HeadLogits(*(torch.zeros(0, self.num_classes, device=rows.device),) * 4)
        if kind == "views":
            a, b = (net(v[rows]) for v in views)
            h, ap = (HeadLogits(head_logits(a, hd), head_logits(b, hd), empty.mix, empty.fmix) for hd in HEADS)
            step_rows, unused = t.rows(rows), rows.new_zeros((), dtype=torch.float32)
        else:  # one head's mixup and FMix forwards
            m, f = (net(images[rows]) for images in mixed[kind])
            own = HeadLogits(empty.weak, empty.strong, head_logits(m, kind), head_logits(f, kind))
            h, ap = (own, empty) if kind == "h" else (empty, own)
            other = HEADS[1 - HEADS.index(kind)]
            step_rows = t.rows(none)
            unused = (head_logits(m, other).float().sum() + head_logits(f, other).float().sum()) * 0.0
        mix_rows = {hd: mix_t[hd].rows(rows if hd == kind else none) for hd in HEADS}
        terms = promix_net_terms(h, ap, step_rows, mix_rows["h"], mix_rows["ap"], w=w, beta=beta,
                                 debias_output=self.pcfg.debias_output)
        return terms, unused

    # -- the class-wise small-loss selection ------------------------------------------------------
    @torch.no_grad()
    def _loss_pass(self, net: nn.Module, features: bool = False) -> tuple[Tensor, ...]:
        """Per-sample CE of h with the noisy label [N] and the h logits [N, K] over the training set (eval
        mode, test transform), each process its share, gathered (with ``features``, also the features [N, d])."""
        if self._eval_loader is None:  # built once: the same ordered, sharded pass every epoch
            self._eval_loader = self.ctx.loader(self.ctx.data.train_eval())
        return tuple(per_sample_pass(self.ctx.accelerator, self._eval_loader, net,
                                     functools.partial(_batch_losses, features=features), len(self.noisy)))

    def _select(self, epoch: int) -> None:
        """CSS of each network on its own losses (rho on its schedule), and the debiased prediction (the mean
        of both networks' ``softmax(h(x) - b log pi_l)``: the suggested label per sample)."""
        p = self.pcfg
        rho = rho_schedule(epoch, p.rho_start, p.rho_end, p.rho_ramp_epochs)
        debiased, features = torch.zeros(len(self.noisy), self.num_classes), None
        for name in NETS:
            losses, logits, *f = self._loss_pass(self.ctx.models[name], features=name == NETS[0])
            features = f[0] if f else features
            self.css[name] = class_wise_small_loss(losses, self.noisy, rho, self.num_classes)
            debiased += debias_probs(logits, self.priors[f"l_{name}"].cpu(), p.debias_pl)
        self.predicted = debiased.argmax(1)
        self.selections += 1
        self.pending_signals = self._trust_signals(debiased / len(NETS), features)
        kept = [int(self.css[name].sum()) for name in NETS]
        self.ctx.print(f"ProMix selection, epoch {epoch + 1}: rho {rho:.3f}, class-wise small-loss sets of "
                       f"{kept[0]} (net1) and {kept[1]} (net2) of {len(self.noisy)}")

    # -- trust diagnostics -------------------------------------------------------------------------
    def _trust_signals(self, probabilities: Tensor, features: Tensor | None) -> TrustSignals:
        """The selection's verdicts as ``label_issue_scores`` hands them out (``1 -`` the mean of both CSS
        sets, the debiased prediction); the second opinion is the two networks' selections against each
        other; no noise estimate (the selected share is set by rho, not estimated); kNN on net1's features."""
        c1, c2 = (self.css[name].float().numpy() for name in NETS)
        return TrustSignals(self.noisy.numpy(), 1.0 - (c1 + c2) / 2, self.predicted.numpy(), probabilities.numpy(),
                            features, opinions={"net1's selection": 1.0 - c1, "net2's selection": 1.0 - c2})

    # -- planning: warm-up and ProMix epochs, the latter with a selection pass per network ---------
    def prepare_plan(self, epoch: int) -> None:
        self._plan_all_clean = epoch >= self.pcfg.warmup_epochs

    def plan_passes(self, epoch: int) -> list[PlanPass]:
        if epoch < self.pcfg.warmup_epochs:
            return []
        data, size = self.ctx.data.train_eval(), self.cfg.train.eval_batch_size
        return [PlanPass(f"selection ({name})", data, functools.partial(_batch_losses, self.ctx.models[name]), size)
                for name in NETS]

    # -- metrics, evaluation ----------------------------------------------------------------------
    def after_epoch(self, epoch: int) -> dict[str, float]:
        if self.selections == 0:
            return {}
        w = (self.css["net1"].float() + self.css["net2"].float()) / 2
        metrics = detection_metrics(w, self.predicted, self.ctx.data.noisy_labels, self.ctx.data.true_labels)
        if "label_correction_acc" in metrics:
            metrics["debiased_train_acc"] = metrics.pop("label_correction_acc")
        metrics["css_fraction"] = float(w.mean())
        return metrics

    def eval_models(self) -> dict[str, nn.Module]:
        """``test_acc``: the output ``promix.eval_output`` names; the other two as ``<name>_test_acc``."""
        chosen = self.pcfg.eval_output
        return {"": self._outputs[chosen], **{k: m for k, m in self._outputs.items() if k != chosen}}

    # -- per-sample verdicts ----------------------------------------------------------------------
    @classmethod
    def per_sample_outputs(cls, state: StateDict) -> dict[str, np.ndarray] | None:
        """The selection of the last epoch start as the clean probability (1 both networks' CSS keeps the
        sample, 0.5 one, 0 none) and the debiased prediction as the suggested label."""
        if "css_net1" not in state or not state.get("selections"):
            return None
        c1, c2 = (state[f"css_{n}"].float().numpy() for n in NETS)
        return {"clean_probability": (c1 + c2) / 2, "clean_probability_net1": c1, "clean_probability_net2": c2,
                "suggested_label": state["predicted_label"].long().numpy()}

    @classmethod
    def label_issue_scores(cls, scoring: Any) -> tuple[np.ndarray, np.ndarray]:
        """``1 - clean probability`` and the debiased prediction; before the first selection, the
        self-confidence of the reported output."""
        out = cls.per_sample_outputs(scoring.method_state())
        if out is None:
            return scoring.self_confidence()
        return 1.0 - out["clean_probability"], out["suggested_label"]

    # -- checkpoint state ----------------------------------------------------------------------
    def state_dict(self) -> StateDict:
        state: StateDict = {"selections": self.selections, "predicted_label": self.predicted}
        state |= {f"css_{name}": self.css[name] for name in NETS}
        state |= {f"prior_{key}": prior.detach().cpu() for key, prior in self.priors.items()}
        return state

    def load_state_dict(self, state: StateDict) -> None:
        n, k = len(self.noisy), self.num_classes
        shapes = {"predicted_label": (n,), **{f"css_{name}": (n,) for name in NETS},
                  **{f"prior_{key}": (k,) for key in self.priors}}
        if "css_net1" not in state:  # (checkpoints of other methods are refused earlier)
            keys = ", ".join(sorted(state)) or "none"
            raise CheckpointError(f"the checkpoint holds no ProMix state (it has {keys}); resume a ProMix run "
                                  "from its own checkpoints")
        missing = [key for key in (*shapes, "selections") if key not in state]
        wrong = [f"{key} {tuple(state[key].shape)} (expected {shape})" for key, shape in shapes.items()
                 if key in state and tuple(getattr(state[key], "shape", ())) != shape]
        if missing or wrong:
            raise CheckpointError(f"ProMix state: {'missing ' + ', '.join(missing) if missing else ''}"
                                  f"{'; ' if missing and wrong else ''}{'shapes ' + ', '.join(wrong) if wrong else ''}"
                                  f": the checkpoint is of another data set or damaged (this run: {n} samples, "
                                  f"{k} classes)")
        for name in NETS:
            self.css[name] = state[f"css_{name}"].to(torch.bool).cpu()
        for key in self.priors:
            self.priors[key] = state[f"prior_{key}"].to(device=self.ctx.device, dtype=torch.float32)
        self.predicted = state["predicted_label"].long().cpu()
        self.selections = int(state["selections"])
