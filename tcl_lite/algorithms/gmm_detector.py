"""TCL's out-of-distribution label-noise detection, streamed over the training set.

From the network's predictions ``p_i`` (softmax) and normalised projections ``v_i``:

1. class centres ``mu = normalise(P^T V)`` (Eq. 3; the normalisation makes the division by
   ``sum_i p_ik`` irrelevant), the prototypes of the alignment loss;
2. the posterior of the given label ``gamma_{i,y_i}``, with ``gamma_ik = softmax_k(v_i . mu_k / T)``
   (the reference's shared temperature) or, with ``sigma="per_cluster"``, the paper's Eq. 5 with a
   per-cluster ``sigma_k`` (Eq. 4);
3. score ``-gamma_{i,y_i}`` min-max normalised over the data set, and a two-component 1-D Gaussian
   mixture (scikit-learn, ``random_state=0``) on the scores, optionally one per noisy class; the
   clean probability ``w_i`` is the posterior of the component with the smaller mean. Scores and
   fit are float32 as in the reference (scikit-learn keeps the input dtype), or float64
   (``tcl.gmm_dtype``).

Memory. Step 2 needs the centres, which depend on every sample, so the ``v_i`` must be either
recomputed by a second forward pass or kept. We keep them, **on the CPU** (N x d float32: 51 MB for
CIFAR, ~1 GB for Clothing1M's 1M images): one encoder pass over N images costs far more than
holding N x d floats in host memory, and the same features are the bank of the kNN accuracy, which
would otherwise need a pass of its own. The accelerator only ever holds O(K d) centre statistics,
one batch of outputs, and O(N) vectors (labels, scores, w) -- never the reference's N x K posterior
matrix nor an N x d feature matrix: the posteriors are computed ``chunk`` rows at a time and only
``gamma_{i,y_i}`` is kept.

Data parallel: every process runs the model on its shard of an ordered loader; the outputs are
gathered per batch (``gather_for_metrics`` drops the padding duplicates), so every process
accumulates the same statistics in the same order. The GMM is fitted on the main process and its
``w``, like the centres, is broadcast, so every rank holds bit-identical state.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tcl_lite.distributed import broadcast_, rank

SIGMAS = ("shared", "per_cluster")
GMM_DTYPES = {"float32": np.float32, "float64": np.float64}


# ---------------------------------------------------------------------------------------------
# Pure pieces (tensors in, tensors out)


class CentreStats:
    """Streaming sufficient statistics of the centres: ``P^T V`` (K x d) and ``sum_i p_ik`` (K)."""

    def __init__(self, num_classes: int, dim: int, device: torch.device | str = "cpu") -> None:
        self.ptv = torch.zeros(num_classes, dim, device=device)
        self.mass = torch.zeros(num_classes, device=device)

    def update(self, p: Tensor, v: Tensor) -> None:
        self.ptv += p.float().T @ v.float()
        self.mass += p.float().sum(dim=0)

    def centres(self) -> Tensor:
        """``mu = normalise(P^T V)``, [K, d]."""
        return F.normalize(self.ptv, dim=1)

    def sigmas(self) -> Tensor:
        """Eq. 4's spread as a scalar per cluster: ``sum_i p_ik ||v_i - mu_k||^2 / sum_i p_ik``.

        With unit ``v_i`` and ``mu_k``, ``||v_i - mu_k||^2 = 2 - 2 v_i . mu_k``, and
        ``sum_i p_ik v_i . mu_k = ||(P^T V)_k||``: no second pass over the features is needed.
        """
        mean_cos = self.ptv.norm(dim=1) / self.mass.clamp_min(1e-12)
        return (2 - 2 * mean_cos).clamp_min(1e-6)


def label_posterior(v: Tensor, labels: Tensor, centres: Tensor, *, temperature: float = 0.25,
                    sigmas: Tensor | None = None) -> Tensor:
    """``gamma_{i, y_i}`` for a chunk of samples.

    Shared (reference): ``softmax_k(v . mu_k / temperature)``. Per cluster (``sigmas`` given): the
    paper's Eq. 5, ``softmax_k(-||v - mu_k||^2 / (2 sigma_k)) = softmax_k((v . mu_k - 1) / sigma_k)``.
    Its Eq. 6 drops the ``-1/sigma_k``, which only cancels in the softmax when all sigma_k are
    equal, so the per-cluster form keeps it.
    """
    cos = v.float() @ centres.float().T
    logits = cos / temperature if sigmas is None else (cos - 1) / sigmas.float()
    return logits.softmax(dim=1).gather(1, labels.view(-1, 1)).squeeze(1)


def minmax(scores: np.ndarray) -> np.ndarray:
    lo, hi = float(scores.min()), float(scores.max())
    return np.zeros_like(scores) if hi <= lo else (scores - lo) / (hi - lo)


def _gmm_clean_posterior(x: np.ndarray) -> np.ndarray:
    from sklearn.mixture import GaussianMixture

    if len(x) < 2 or float(x.max()) <= float(x.min()):
        # Nothing to separate: no evidence against any label, so every label is trusted.
        return np.ones(len(x))
    gmm = GaussianMixture(n_components=2, random_state=0).fit(x.reshape(-1, 1))
    return gmm.predict_proba(x.reshape(-1, 1))[:, int(np.argmin(gmm.means_.ravel()))]


def gmm_clean_probability(scores: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """Posterior of the lower-score (clean) component of a 2-component GMM on ``scores``.

    ``scores`` are already min-max normalised over the data set; the fit keeps their float dtype.
    With ``labels``, one GMM per noisy class on that class's scores (the reference's ``sep_gmm``).
    """
    scores = np.asarray(scores)
    if scores.dtype not in (np.float32, np.float64):
        scores = scores.astype(np.float64)
    if labels is None:
        return _gmm_clean_posterior(scores)
    w = np.empty_like(scores)
    for k in np.unique(labels):
        mask = labels == k
        w[mask] = _gmm_clean_posterior(scores[mask])
    return w


@dataclass
class Detection:
    clean_probability: Tensor  # [N] float32, w_i
    prototypes: Tensor  # [K, d] the centres mu
    predictions: Tensor  # [N] int64, argmax of the classifier: the corrected labels
    features: Tensor | None = None  # [N, d] on the CPU, kept for the kNN bank; drop it after use

    @property
    def clean_fraction(self) -> float:
        return float((self.clean_probability > 0.5).float().mean())


def detect(v: Tensor, p: Tensor, labels: Tensor, *, temperature: float = 0.25, sigma: str = "shared",
           per_class: bool = False, chunk: int = 8192, gmm_dtype: str = "float32") -> Detection:
    """The whole detection on in-memory ``v`` [N, d] (normalised), ``p`` [N, K], noisy ``labels`` [N]."""
    stats = CentreStats(p.shape[1], v.shape[1], v.device)
    for pc, vc in zip(p.split(chunk), v.split(chunk)):
        stats.update(pc, vc)
    return _finish(stats, v, labels, p.argmax(dim=1), temperature=temperature, sigma=sigma,
                   per_class=per_class, chunk=chunk, device=v.device, gmm_dtype=gmm_dtype)


def _finish(stats: CentreStats, v_cpu: Tensor, labels: Tensor, predictions: Tensor, *, temperature: float,
            sigma: str, per_class: bool, chunk: int, device: torch.device, gmm_dtype: str = "float32") -> Detection:
    if sigma not in SIGMAS:
        raise ValueError(f"tcl.sigma={sigma!r} is not one of {', '.join(SIGMAS)}")
    centres = stats.centres()
    sigmas = stats.sigmas() if sigma == "per_cluster" else None
    labels = labels.to(device)
    gamma = torch.cat([label_posterior(vc.to(device), labels[s:s + chunk], centres, temperature=temperature,
                                       sigmas=sigmas)
                       for s, vc in zip(range(0, len(v_cpu), chunk), v_cpu.split(chunk))])
    if gmm_dtype not in GMM_DTYPES:
        raise ValueError(f"tcl.gmm_dtype={gmm_dtype!r} is not one of {', '.join(GMM_DTYPES)}")
    scores = minmax(-gamma.cpu().numpy().astype(GMM_DTYPES[gmm_dtype]))
    if rank() == 0:
        w_np = gmm_clean_probability(scores, labels.cpu().numpy() if per_class else None)
        w = torch.as_tensor(w_np, dtype=torch.float32, device=device)
    else:
        w = torch.empty(len(scores), dtype=torch.float32, device=device)
    # Every process computed the same centres from the same gathered data; broadcasting them and w
    # makes "identical state on every rank" a guarantee rather than a property of the arithmetic.
    broadcast_(w)
    broadcast_(centres)
    return Detection(w, centres, predictions.to(device), v_cpu)


# ---------------------------------------------------------------------------------------------
# Streaming over a (sharded, ordered) loader


def batch_outputs(model: nn.Module, images: Tensor) -> tuple[Tensor, Tensor]:
    """One batch's softmax ``p`` and normalised projection ``v``, float32 (the passes' work per batch)."""
    out = model(images)
    if out.proj is None:
        raise ValueError("noise detection needs the projector head (Method.needs_projector = True)")
    return out.logits.float().softmax(dim=1), F.normalize(out.proj.float(), dim=1)


@torch.no_grad()
def stream_outputs(accelerator: Any, model: nn.Module, loader: Any) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """``(index, softmax p, normalised projection v, label)`` per batch, gathered over processes,
    in float32 on the device; the model is in eval mode meanwhile."""
    was_training = model.training
    model.eval()
    try:
        for batch in loader:
            p, v = batch_outputs(model, batch["image"])
            yield accelerator.gather_for_metrics((batch["index"], p, v, batch["label"]))
    finally:
        model.train(was_training)


def collect_projections(accelerator: Any, model: nn.Module, loader: Any, n: int) -> tuple[Tensor, Tensor]:
    """All projections [n, d] and labels [n] of a data set, on the CPU, in index order."""
    feats: Tensor | None = None
    labels = torch.full((n,), -1, dtype=torch.long)
    for index, _, v, label in stream_outputs(accelerator, model, loader):
        if feats is None:
            feats = torch.empty(n, v.shape[1])
        index = index.cpu()
        feats[index] = v.cpu()
        labels[index] = label.cpu()
    if feats is None or bool((labels < 0).any()):
        raise RuntimeError("the pass did not cover every sample of the data set")
    return feats, labels


def detection_pass(accelerator: Any, model: nn.Module, loader: Any, noisy_labels: Tensor, num_classes: int, *,
                   temperature: float = 0.25, sigma: str = "shared", per_class: bool = False,
                   chunk: int = 8192, gmm_dtype: str = "float32") -> Detection:
    """Run the model over the training set (test transform) and detect the noisy labels.

    ``noisy_labels`` [N] are the labels training uses, indexed like the data set's ``index``.
    """
    n = len(noisy_labels)
    stats: CentreStats | None = None
    feats: Tensor | None = None
    preds = torch.full((n,), -1, dtype=torch.long)
    for index, p, v, _ in stream_outputs(accelerator, model, loader):
        if stats is None:
            stats = CentreStats(num_classes, v.shape[1], v.device)
            feats = torch.empty(n, v.shape[1])
        stats.update(p, v)
        index = index.cpu()
        feats[index] = v.cpu()
        preds[index] = p.argmax(dim=1).cpu()
    if stats is None or bool((preds < 0).any()):
        raise RuntimeError("the detection pass did not cover every training sample")
    return _finish(stats, feats, noisy_labels, preds, temperature=temperature, sigma=sigma,
                   per_class=per_class, chunk=chunk, device=accelerator.device, gmm_dtype=gmm_dtype)


def detection_metrics(w: Tensor, predictions: Tensor, noisy: np.ndarray, true: np.ndarray | None) -> dict[str, float]:
    """The reference's monitoring figures; the ones that need the true labels only when known."""
    w_np = w.float().cpu().numpy()
    metrics = {"est_clean_fraction": float((w_np > 0.5).mean())}
    if true is None:
        return metrics
    clean = noisy == true
    metrics["label_correction_acc"] = float((predictions.cpu().numpy() == true).mean())
    metrics["detection_acc"] = float(((w_np > 0.5) == clean).mean())
    if 0 < clean.sum() < len(clean):  # AUC is undefined with a single class
        from sklearn.metrics import roc_auc_score

        metrics["detection_auc"] = float(roc_auc_score(clean, w_np))
    return metrics
