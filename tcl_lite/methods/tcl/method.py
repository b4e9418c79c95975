"""TCL: Twin Contrastive Learning with Noisy Labels (Huang, Zhang, Shan, CVPR 2023).

One step, for a batch of B images seen as one weak and two strong views:

* mixup over the 3B views with one ``lambda = max(l, 1 - l)``, ``l ~ Beta(a, a)``, and one
  permutation; the encoder sees ``[weak, mixed (3B), strong1, strong2]`` (6B images; the weak
  view's outputs only feed BatchNorm statistics, as in the reference);
* six terms (``tcl_losses``): NT-Xent between the strong views (negatives from every process),
  cross-supervision with swapped views, mixed-target CE, alignment of the mixed projections to the
  prototypes, per-sample entropy and batch-mean negative entropy;
* targets: the noisy labels during ``tcl.warmup_epochs``, then the corrected targets built from the
  clean probabilities ``w`` of the last noise detection (``detection.gmm_detector``), which runs
  before training and after every epoch.

With ``train.gradient_accumulation_steps > 1``, ``tcl.gradient_mode=exact`` (default) computes the
full-batch loss through the gradient cache (``gradient_cache.py``), so accumulation changes the
memory, not the objective; ``local`` computes the loss per micro-batch (contrastive negatives,
mixup partners and the balance term within each micro-batch), cheaper by one forward per step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tcl_lite.algorithms.gmm_detector import (
    Detection,
    batch_outputs,
    collect_projections,
    detection_metrics,
    detection_pass,
)
from tcl_lite.algorithms.gradient_cache import cached_backward
from tcl_lite.algorithms.knn import knn_accuracy
from tcl_lite.algorithms.trust import TrustSignals
from tcl_lite.distributed import all_gather_with_grad
from tcl_lite.errors import CheckpointError
from tcl_lite.methods.base import Batch, Method, StateDict, StepInfo, TrainContext
from tcl_lite.methods.planning import PlanPass
from tcl_lite.methods.tcl.config import TCLConfig
from tcl_lite.methods.tcl.losses import corrected_targets, mixup_targets, tcl_terms, upcast

# Loss terms in the order of ``TCLTerms`` with the config key of each weight.
TERM_WEIGHTS = (("contrastive", "w_contrastive"), ("cross", "w_cross"), ("mixed", "w_mixed"),
                ("align", "w_align"), ("entropy", "w_entropy"), ("balance", "w_balance"))
STATE_TENSORS = ("clean_probability", "prototypes", "corrected_label")


class TCL(Method):
    name = "tcl"
    config = TCLConfig
    presets = ("digits_tcl", "cifar10_tcl", "cifar10_tcl_sym20", "cifar10_tcl_sym50", "cifar10_tcl_sym80",
               "cifar10_tcl_sym90", "cifar10_tcl_asym40", "cifar10_tcl_1gpu_exact", "cifar100_tcl",
               "cifar100_tcl_sym20", "cifar100_tcl_sym50", "cifar100_tcl_sym80", "cifar100_tcl_sym90",
               "cifar10n_tcl_aggre", "cifar10n_tcl_rand1", "cifar10n_tcl_worst", "cifar100n_tcl")
    views = ("weak", "strong", "strong")
    normalization = "tcl"  # its reference's CIFAR mean/std (data.normalization=auto)
    sync_bn = True  # its reference converts BatchNorm to SyncBatchNorm across processes (model.sync_bn=auto)
    needs_projector = True
    warmup_setting = "tcl.warmup_epochs"
    after_warmup = "corrected"
    metric_labels = {"knn_acc": "kNN test accuracy (TCL)",
                     "label_correction_acc": "label correction accuracy (train, TCL)"}

    def __init__(self, ctx: TrainContext) -> None:
        super().__init__(ctx)
        self.tcfg = self.cfg.tcl
        self.num_classes = ctx.data.num_classes
        device = ctx.device
        self.noisy = torch.as_tensor(ctx.data.noisy_labels, dtype=torch.long, device=device)
        # O(N) + O(K d) state, all replaced by the first detection (or restored on resume).
        self.clean_probability = torch.ones(len(self.noisy), device=device)
        self.prototypes = torch.zeros(self.num_classes, self.cfg.model.proj_dim, device=device)
        self.corrected_label = self.noisy.clone()
        self.est_clean_fraction = 1.0
        self.detections = 0

    @property
    def clean_scale(self) -> float:
        """s1: the configured value, or the estimated clean fraction mean(w > 0.5)."""
        return self.tcfg.clean_scale if self.tcfg.clean_scale >= 0 else self.est_clean_fraction

    @property
    def clean_scale2(self) -> float:
        """s2 (mixed-image targets): the configured value, or the estimated clean fraction."""
        return self.tcfg.clean_scale2 if self.tcfg.clean_scale2 >= 0 else self.est_clean_fraction

    # -- per-sample verdicts (report, export, label issues) ---------------------------------------
    @classmethod
    def per_sample_outputs(cls, state: StateDict) -> dict[str, np.ndarray] | None:
        if "clean_probability" not in state:  # e.g. a checkpoint saved before the first detection
            return None
        return {"clean_probability": state["clean_probability"].float().numpy(),
                "corrected_label": state["corrected_label"].long().numpy()}

    @classmethod
    def label_issue_scores(cls, scoring: Any) -> tuple[np.ndarray, np.ndarray]:
        """``1 - w`` and the corrected label, from the checkpoint's detection state (no forward pass)."""
        out = cls.per_sample_outputs(scoring.method_state())
        if out is None:
            raise scoring.error(f"{scoring.ckpt} holds no TCL detection state (clean_probability)")
        return 1.0 - out["clean_probability"], out["corrected_label"]

    # -- hooks ---------------------------------------------------------------------------------
    def before_training(self, resumed: bool) -> dict[str, float]:
        # On resume, w and the prototypes come from the checkpoint, exactly as they were saved.
        return {} if resumed else self.detect()

    def after_epoch(self, epoch: int) -> dict[str, float]:
        return self.detect()

    def training_step(self, batch: Batch, info: StepInfo) -> dict[str, Tensor]:
        warm = info.epoch < self.tcfg.warmup_epochs
        n = self.ctx.micro_batches
        if n > 1 and self.tcfg.gradient_mode == "local":
            return self._local_step(self.ctx.split(batch), warm)
        step = _MixedStep(batch["image"], self._draw_lambda(), batch["index"].shape[0])
        forward = self._forward_fn(step, n)
        loss_fn = self._loss_fn(batch, step, warm, n)
        if n == 1:  # the plain single forward: no cache, no second pass
            loss, logs = loss_fn(forward(0))
            self.ctx.backward(loss)
        else:
            loss, logs = cached_backward(range(n), forward, loss_fn, backward=self.ctx.backward,
                                         sync_gradients=self.ctx.sync_gradients, stateful=self.ctx.model,
                                         device=self.ctx.device)
        return {k: v.detach() for k, v in logs.items()}

    # -- one step --------------------------------------------------------------------------------
    def _draw_lambda(self) -> float:
        # torch's CPU generator (saved in checkpoints), not numpy's: one source of randomness.
        lam = float(torch.distributions.Beta(self.tcfg.mixup_alpha, self.tcfg.mixup_alpha).sample())
        return max(lam, 1.0 - lam)

    def _forward_fn(self, step: _MixedStep, chunks: int) -> Any:
        def forward(j: int) -> tuple[Tensor, Tensor]:
            out = self.ctx.model(step.encoder_input(j, chunks))
            return out.logits, out.proj

        return forward

    def _loss_fn(self, batch: Batch, step: _MixedStep, warm: bool, chunks: int) -> Any:
        def loss_fn(outs: tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
            return self.loss_on_outputs(outs[0], outs[1], batch["label"], batch["index"], step.lam, step.perm,
                                        warm, chunks)

        return loss_fn

    def _local_step(self, micro_batches: list[Batch], warm: bool) -> dict[str, Tensor]:
        """Loss per micro-batch (each its own mixup permutation and negatives), scaled by 1/n."""
        n, lam = len(micro_batches), self._draw_lambda()
        logs: dict[str, Tensor] = {}
        for i, mb in enumerate(micro_batches):
            step = _MixedStep(mb["image"], lam, mb["index"].shape[0])
            with self.ctx.sync_gradients(last=i == n - 1):
                loss, terms = self._loss_fn(mb, step, warm, 1)(self._forward_fn(step, 1)(0))
                self.ctx.backward(loss / n)
            for k, v in terms.items():
                logs[k] = logs.get(k, 0.0) + v.detach() / n
        return logs

    def loss_on_outputs(self, logits: Tensor, proj: Tensor, labels: Tensor, index: Tensor, lam: float, perm: Tensor,
                        warm: bool, chunks: int = 1) -> tuple[Tensor, dict[str, Tensor]]:
        """The total loss of a batch from the encoder outputs of its 6B images.

        ``chunks``: the outputs are the concatenation of that many micro-batch forwards, each laid
        out ``[weak, mixed_weak, mixed_s1, mixed_s2, s1, s2]`` (see ``_MixedStep``).
        """
        logits, proj = _by_view(upcast(logits), chunks), _by_view(upcast(proj), chunks)
        s1, s2 = logits[4], logits[5]
        onehot = F.one_hot(labels, self.num_classes).to(logits.dtype)
        if warm:
            t1 = t2 = base = onehot
        else:
            p1, p2 = s1.detach().softmax(dim=1), s2.detach().softmax(dim=1)
            w = self.clean_probability[index].to(onehot.dtype)
            t1, t2, base = corrected_targets(onehot, p1, p2, w, self.clean_scale,
                                             self.clean_scale2)
        terms = tcl_terms(
            logits_s1=s1, logits_s2=s2, logits_mixed=logits[1:4].flatten(0, 1), proj_mixed=proj[1:4].flatten(0, 1),
            proj_s1_all=all_gather_with_grad(proj[4]), proj_s2_all=all_gather_with_grad(proj[5]),
            t1=t1, t2=t2, mixed_targets=mixup_targets(base.repeat(3, 1), lam, perm), prototypes=self.prototypes,
            temperature=self.tcfg.temperature, align_temperature=self.tcfg.align_temperature)
        loss = sum(getattr(self.tcfg, key) * value for (_, key), value in zip(TERM_WEIGHTS, terms))
        logs = {"loss": loss.detach(), **{name: v.detach() for (name, _), v in zip(TERM_WEIGHTS, terms)},
                "warmup": torch.tensor(float(warm))}
        return loss, logs

    # -- noise detection -------------------------------------------------------------------------
    def detect(self) -> dict[str, float]:
        """Detection pass over the training set, then the per-epoch metrics."""
        ctx, t = self.ctx, self.tcfg
        data = ctx.data
        det = detection_pass(ctx.accelerator, ctx.model, ctx.loader(data.train_eval()), self.noisy, self.num_classes,
                             temperature=t.posterior_temperature, sigma=t.sigma, per_class=t.gmm_per_class,
                             gmm_dtype=t.gmm_dtype)
        self.clean_probability, self.prototypes, self.corrected_label = (
            det.clean_probability, det.prototypes, det.predictions)
        self.est_clean_fraction = det.clean_fraction
        self.detections += 1
        self.pending_signals = self._trust_signals(det)
        metrics = detection_metrics(det.clean_probability, det.predictions, data.noisy_labels, data.true_labels)
        # The reference's kNN monitor votes with the true train labels (a probe of the representation);
        # without them, the noisy ones.
        bank_labels = torch.as_tensor(data.true_labels if data.true_labels is not None else data.noisy_labels)
        if data.test is not None:  # a dataset without a test split has no kNN accuracy to report
            test_v, test_y = collect_projections(ctx.accelerator, ctx.model, ctx.loader(data.test), len(data.test))
            metrics["knn_acc"] = knn_accuracy(test_v, test_y, det.features, bank_labels, self.num_classes,
                                              t.knn_k, t.knn_t, device=ctx.device)
        metrics["clean_scale"] = self.clean_scale
        return metrics

    # -- trust diagnostics -------------------------------------------------------------------------
    def _trust_signals(self, det: Detection) -> TrustSignals:
        """TCL's verdicts (``1 - w``, the classifier's argmax as the corrected label); the second opinion on
        which labels are noisy is the classifier's self-confidence in the given label (the mixture model scores
        the representation's cluster posterior instead)."""
        given = self.ctx.data.noisy_labels
        probs = det.probabilities.numpy()
        noisy_p = 1.0 - det.clean_probability.float().cpu().numpy()
        return TrustSignals(given, noisy_p, det.predictions.cpu().numpy(), probs, det.features,
                            estimated_noise=1.0 - det.clean_fraction,
                            opinions={"mixture model": noisy_p,
                                      "classifier self-confidence": 1.0 - probs[np.arange(len(given)), given]})

    # -- planning: warm-up and corrected epochs, each with its detection pass ----------------------
    def prepare_plan(self, epoch: int) -> None:
        # The detection's tensors keep their shapes from __init__; only its summary changes.
        if epoch >= self.tcfg.warmup_epochs:
            self.detections, self.est_clean_fraction = 1, 0.5

    def plan_passes(self, epoch: int) -> list[PlanPass]:
        data, size = self.ctx.data, self.cfg.train.eval_batch_size

        def outputs(batch: Batch) -> tuple[Tensor, Tensor]:
            return batch_outputs(self.ctx.model, batch["image"])

        passes = [PlanPass("detection", data.train_eval(), outputs, size)]
        if data.test is not None:  # the kNN monitor's test projections
            passes.append(PlanPass("kNN test pass", data.test, outputs, size))
        return passes

    # -- checkpoint state ----------------------------------------------------------------------
    def state_dict(self) -> StateDict:
        return {"clean_probability": self.clean_probability,
                "prototypes": self.prototypes, "corrected_label": self.corrected_label,
                "est_clean_fraction": self.est_clean_fraction, "detections": self.detections}

    def load_state_dict(self, state: StateDict) -> None:
        if any(k not in state for k in STATE_TENSORS):  # (checkpoints of other methods are refused earlier)
            raise CheckpointError(f"the checkpoint holds no TCL state (it has {', '.join(sorted(state)) or 'none'}); "
                                  "resume a TCL run from its own checkpoints")
        expected = {"clean_probability": self.clean_probability.shape, "prototypes": self.prototypes.shape,
                    "corrected_label": self.corrected_label.shape}
        for key, shape in expected.items():
            if tuple(state[key].shape) != tuple(shape):
                raise CheckpointError(f"TCL state '{key}' has shape {tuple(state[key].shape)}, this run needs "
                                      f"{tuple(shape)}: the checkpoint is of another data set or model")
        device = self.ctx.device
        self.clean_probability = state["clean_probability"].to(device, torch.float32)
        self.prototypes = state["prototypes"].to(device, torch.float32)
        self.corrected_label = state["corrected_label"].to(device, torch.long)
        self.est_clean_fraction = float(state["est_clean_fraction"])
        self.detections = int(state["detections"])


class _MixedStep:
    """The mixed images of one step and the encoder input of each micro-batch, built on demand.

    ``x3 = [weak, strong1, strong2]`` (3B), ``mixed = lam * x3 + (1 - lam) * x3[perm]``. Micro-batch
    ``j`` of ``n`` covers samples ``j*b .. (j+1)*b`` and its input is
    ``[weak_j, mixed_weak_j, mixed_s1_j, mixed_s2_j, s1_j, s2_j]`` (6b images), so that with n = 1 it
    is the reference's ``[weak, mixed (3B), strong1, strong2]`` and each micro-batch's BatchNorm sees
    the same mix of views as the full batch. Inputs are rebuilt rather than stored: the cache's
    replay asks for them a second time, and only the 3B mixed images are kept.
    """

    def __init__(self, images: list[Tensor], lam: float, batch_size: int) -> None:
        self.weak, self.s1, self.s2 = images
        self.lam = lam
        x3 = torch.cat([self.weak, self.s1, self.s2])
        self.perm = torch.randperm(x3.shape[0]).to(x3.device)
        self.mixed = (lam * x3 + (1.0 - lam) * x3[self.perm]).view(3, batch_size, *x3.shape[1:])

    def encoder_input(self, j: int, n: int) -> Tensor:
        b = self.weak.shape[0] // n
        sl = slice(j * b, (j + 1) * b)
        return torch.cat([self.weak[sl], self.mixed[:, sl].flatten(0, 1), self.s1[sl], self.s2[sl]])


def _by_view(x: Tensor, chunks: int) -> Tensor:
    """Outputs of ``chunks`` micro-batch forwards [chunks * 6b, ...] -> [6, B, ...] in sample order."""
    return x.reshape(chunks, 6, -1, *x.shape[1:]).transpose(0, 1).flatten(1, 2)
