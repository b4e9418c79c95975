"""TCL's loss terms as pure functions of tensors (no model, no state, no process group).

Shapes: B samples, K classes, d projection size. Projections are L2-normalised. Every function
computes in float32 whatever the (lower) input dtype, so the losses are stable under autocast; float64
inputs stay float64 (the parity tests compare with an independent formulation in float64).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


def upcast(x: Tensor) -> Tensor:
    """``x`` in float32, or float64 when it already is."""
    return x if x.dtype == torch.float64 else x.float()


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over rows of ``-sum_k t_k log softmax(logits)_k`` (hard CE when ``targets`` is one-hot)."""
    return -(upcast(targets) * F.log_softmax(upcast(logits), dim=1)).sum(dim=1).mean()


def nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """SimCLR's NT-Xent between two views: rows i of ``z1`` and ``z2`` are the positive pair.

    The 2B x 2B cosine similarities (inputs are normalised) are divided by ``temperature``; each
    row's own similarity is excluded, the other view of the same image is the target, and the
    cross-entropy is averaged over the 2B rows.
    """
    z = upcast(torch.cat([z1, z2]))
    n = z1.shape[0]
    sim = z @ z.T / temperature
    # -inf on the diagonal removes self-similarity from the softmax denominators.
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, positive)


def mixup_targets(targets: Tensor, lam: float, perm: Tensor) -> Tensor:
    """Targets of mixed images ``lam * x + (1 - lam) * x[perm]``: mixed the same way."""
    return lam * targets + (1.0 - lam) * targets[perm]


class CorrectedTargets(NamedTuple):
    strong1: Tensor  # [B, K] target of the first strong view
    strong2: Tensor  # [B, K] target of the second strong view
    base: Tensor  # [B, K] target of each image before mixup (tiled x3 for the mixed views)


def corrected_targets(onehot: Tensor, p1: Tensor, p2: Tensor, w: Tensor, scale1: float,
                      scale2: float) -> CorrectedTargets:
    """Bootstrap targets with swapped views (Eq. 9-10 in the reference's form).

    ``t1 = (1 - w s1) p2 + w s1 y`` supervises the first view with the *second* view's prediction,
    and vice versa; ``base = (1 - w s2) (p1 + p2)/2 + w s2 y``. ``p1``, ``p2`` must be detached.
    """
    a1 = (w * scale1).unsqueeze(1)
    a2 = (w * scale2).unsqueeze(1)
    t1 = (1 - a1) * p2 + a1 * onehot
    t2 = (1 - a1) * p1 + a1 * onehot
    base = (1 - a2) * (p1 + p2) / 2 + a2 * onehot
    return CorrectedTargets(t1, t2, base)


def entropy_terms(logits: Tensor) -> tuple[Tensor, Tensor]:
    """``(mean per-sample entropy, sum_k pbar_k log pbar_k)`` of the softmax of ``logits``.

    The first (minimised) makes predictions confident; the second is the negative entropy of the
    batch-mean prediction ``pbar`` (minimised, it keeps the classes balanced). Both are over the
    rows given, so the balance term is a property of the whole batch.
    """
    logp = F.log_softmax(upcast(logits), dim=1)
    p = logp.exp()
    ent = -(p * logp).sum(dim=1).mean()
    pbar = p.mean(dim=0)
    return ent, (pbar * pbar.clamp_min(1e-12).log()).sum()


class TCLTerms(NamedTuple):
    contrastive: Tensor
    cross: Tensor  # cls_loss1: the two strong views against each other's corrected targets
    mixed: Tensor  # cls_loss2: mixed images against mixed targets
    align: Tensor  # mixed projections against the prototypes
    entropy: Tensor
    balance: Tensor


def tcl_terms(*, logits_s1: Tensor, logits_s2: Tensor, logits_mixed: Tensor, proj_mixed: Tensor,
              proj_s1_all: Tensor, proj_s2_all: Tensor, t1: Tensor, t2: Tensor, mixed_targets: Tensor,
              prototypes: Tensor, temperature: float, align_temperature: float) -> TCLTerms:
    """The six terms of one step. ``proj_*_all`` are the strong-view projections of the whole
    (possibly all-gathered) batch, the contrastive negatives; the rest is per-process."""
    contrastive = nt_xent(proj_s1_all, proj_s2_all, temperature)
    cross = soft_cross_entropy(logits_s1, t1) + soft_cross_entropy(logits_s2, t2)
    mixed = soft_cross_entropy(logits_mixed, mixed_targets)
    proj_mixed = upcast(proj_mixed)
    align = soft_cross_entropy(proj_mixed @ prototypes.to(proj_mixed.dtype).T / align_temperature, mixed_targets)
    ent, ne = entropy_terms(torch.cat([logits_s1, logits_s2, logits_mixed]))
    return TCLTerms(contrastive, cross, mixed, align, ent, ne)
