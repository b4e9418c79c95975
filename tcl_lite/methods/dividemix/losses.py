"""DivideMix's targets and loss terms as pure functions of tensors (no model, no state, no config).

The behaviour is that of the reference implementation (LiJunnan1992/DivideMix, Train_cifar.py), as
stated in ``/work/shared/reference/dividemix.md``. Shapes: B samples, K classes. Every function computes
in float32 whatever the (lower) input dtype, so the terms are stable under autocast; float64 inputs stay
float64 (the tests compare with an independent float64 formulation).

Notes on how this differs from the reference's code (not its results):

* ``draw_mix_lambda`` draws from torch's global CPU generator, not ``np.random.beta``: torch's generator
  is saved in tcl_lite's checkpoints, so a resumed run draws the same lambdas (same distribution).
* ``confidence_penalty`` uses ``log_softmax`` where the reference takes ``softmax(...).log()``: the same
  value wherever the reference's is finite, and no ``0 * -inf = nan`` when a probability underflows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def upcast(x: Tensor) -> Tensor:
    """``x`` in float32, or float64 when it already is."""
    return x if x.dtype == torch.float64 else x.float()


def sharpen(p: Tensor, T: float) -> Tensor:
    """Temperature sharpening: ``p ** (1 / T)`` renormalised over the classes (dim 1)."""
    if T <= 0:
        raise ValueError(f"sharpening temperature must be > 0, got {T}")
    pt = upcast(p) ** (1.0 / T)
    return pt / pt.sum(dim=1, keepdim=True)


def co_guess(logit_list: Sequence[Tensor], T: float) -> Tensor:
    """Label co-guessing of the unlabeled samples: the mean of the softmaxes of ``logit_list``
    (the reference's A(u1), A(u2), B'(u1), B'(u2)), sharpened with ``T``. Detached: the reference
    computes the targets under ``no_grad``."""
    if len(logit_list) == 0:
        raise ValueError("co_guess needs at least one logits tensor")
    p = torch.stack([F.softmax(upcast(z.detach()), dim=1) for z in logit_list]).mean(dim=0)
    return sharpen(p, T)


def co_refine(logits_x1: Tensor, logits_x2: Tensor, onehot: Tensor, w: Tensor, T: float) -> Tensor:
    """Label co-refinement of the labeled samples: ``px`` = mean softmax of the two views,
    ``px = w * onehot + (1 - w) * px`` with the clean probability ``w`` ([B] or [B, 1]), sharpened
    with ``T``. Detached, as the reference's (computed under ``no_grad``)."""
    px = (F.softmax(upcast(logits_x1.detach()), dim=1) + F.softmax(upcast(logits_x2.detach()), dim=1)) / 2
    w = upcast(w.detach()).reshape(-1, 1)  # one weight per row, broadcast over the classes
    px = w * upcast(onehot) + (1.0 - w) * px
    return sharpen(px, T)


def draw_mix_lambda(alpha: float) -> float:
    """MixMatch's ``l ~ Beta(alpha, alpha)``, ``l = max(l, 1 - l)``: the mixed sample stays closer to
    its own (first) input, so the labeled rows stay mostly labeled.

    Drawn with torch's global CPU generator (the reference: ``np.random.beta``), which tcl_lite saves in
    its checkpoints, so a resumed run draws the same sequence; TCL's mixup lambda is drawn the same way.
    """
    if alpha <= 0:
        raise ValueError(f"Beta parameter must be > 0, got {alpha}")
    lam = float(torch.distributions.Beta(float(alpha), float(alpha)).sample())
    return max(lam, 1.0 - lam)


class Mixed(NamedTuple):
    inputs: Tensor  # lam * a + (1 - lam) * a[perm]
    targets: Tensor  # mixed the same way


def mixmatch(inputs: Tensor, targets: Tensor, lam: float, perm: Tensor) -> Mixed:
    """Mix ``inputs`` ([x1, x2, u1, u2], 4B rows) and their ``targets`` ([tx, tx, tu, tu]) with one
    permutation ``perm`` of all rows: ``lam * a + (1 - lam) * a[perm]``. In the reference ``lam`` is
    drawn before ``perm`` (``torch.randperm(4B)``)."""
    if inputs.shape[0] != targets.shape[0] or perm.shape != (inputs.shape[0],):
        raise ValueError(f"inputs ({inputs.shape[0]} rows), targets ({targets.shape[0]}) and perm "
                         f"{tuple(perm.shape)} must agree")
    perm = perm.to(inputs.device)
    mixed_inputs = lam * inputs + (1.0 - lam) * inputs[perm]
    t = upcast(targets)
    return Mixed(mixed_inputs, lam * t + (1.0 - lam) * t[perm.to(t.device)])


class DivideMixTerms(NamedTuple):
    lx: Tensor  # soft-target cross-entropy on the labeled rows
    lu: Tensor  # mean squared error between softmax and target on the unlabeled rows
    penalty: Tensor  # KL(uniform || mean prediction) over all rows


def dividemix_terms(logits: Tensor, mixed_targets: Tensor, n_labeled: int, num_classes: int) -> DivideMixTerms:
    """The three terms of DivideMix's loss ``Lx + lambda_u(t) * Lu + penalty`` on the logits of one
    forward of the mixed inputs, laid out [x1, x2, u1, u2]; the first ``n_labeled`` (2B) rows are labeled.

    ``Lx = -mean_i sum_c t_ic log softmax(z_i)_c`` over the labeled rows; ``Lu`` = the mean over all
    elements of ``(softmax(z_u) - t_u) ** 2``; ``penalty = sum_c pi_c log(pi_c / pbar_c)`` with ``pi``
    uniform (1/K) and ``pbar`` the mean softmax of all rows, which keeps the predictions from
    collapsing onto few classes.
    """
    if logits.shape != mixed_targets.shape or logits.shape[1] != num_classes:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(mixed_targets.shape)} must both be "
                         f"[N, {num_classes}]")
    if not 0 < n_labeled < logits.shape[0]:
        raise ValueError(f"n_labeled={n_labeled} must leave labeled and unlabeled rows in {logits.shape[0]}")
    z, t = upcast(logits), upcast(mixed_targets)
    lx = -(F.log_softmax(z[:n_labeled], dim=1) * t[:n_labeled]).sum(dim=1).mean()
    lu = (F.softmax(z[n_labeled:], dim=1) - t[n_labeled:]).square().mean()
    prior = torch.full((num_classes,), 1.0 / num_classes, dtype=z.dtype, device=z.device)
    mean_prediction = F.softmax(z, dim=1).mean(dim=0)
    penalty = (prior * torch.log(prior / mean_prediction)).sum()
    return DivideMixTerms(lx, lu, penalty)


def lambda_u_at(fractional_epoch: float, warmup_epochs: float, lambda_u: float, rampup_epochs: float = 16) -> float:
    """The weight of ``Lu``: the reference's ``linear_rampup``, ``lambda_u * clip((current - warm_up) /
    rampup_epochs, 0, 1)`` with ``current = epoch + batch_idx / num_iter`` (epochs counted from 0) and
    ``warm_up`` the number of warm-up epochs; it starts at 0 in the first epoch after the warm-up."""
    if rampup_epochs <= 0:
        raise ValueError(f"rampup_epochs must be > 0, got {rampup_epochs}")
    ramp = np.clip((fractional_epoch - warmup_epochs) / rampup_epochs, 0.0, 1.0)
    return float(lambda_u) * float(ramp)


def confidence_penalty(logits: Tensor) -> Tensor:
    """``mean_i sum_c p_ic log p_ic``, the negative entropy of the predictions: added to the warm-up's
    CE for asymmetric noise (the reference's NegEntropy), it penalises over-confident predictions."""
    z = upcast(logits)
    return (F.softmax(z, dim=1) * F.log_softmax(z, dim=1)).sum(dim=1).mean()
