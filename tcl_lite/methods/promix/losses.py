"""ProMix's schedules, selection rules, targets, mixing and loss terms as pure functions of tensors.

No networks, no state, no config: the behaviour of the reference implementation (Justherozen/ProMix,
Train_promix.py, utils/utils.py, utils/fmix.py) as ``/work/shared/reference/promix.md`` states it.
Shapes: B samples in the (whole) batch, K classes; C is a network's clean set of the step, U the rest.
Terms are computed in float32 whatever the (lower) input dtype, so they are stable under autocast;
float64 inputs stay float64 (the tests compare with an independent float64 formulation).

Micro-batches. The engine may compute one step in micro-batches; the objective stays the reference's:

* Whole-batch parts, computed ONCE per step without a graph: MHCS, LGA (its cap and its ordering run
  over the batch), the targets, the pseudo-labels, the prior update, and the mixing draws (the
  permutations pair samples of C across micro-batches). They need only the raw ``h(x)`` logits of both
  networks on the whole batch: take them from a no-grad, train-mode forward of the weak view over the
  micro-batches first (as the gradient cache's first pass, ``methods/gradient_cache.py``, with its
  ``KeepBuffers`` around the second forward so BatchNorm statistics are updated once), then
  ``select_step`` (each network) and ``draw_mix`` / ``mixup`` / ``fmix`` on the whole batch's images.
* Every loss term is then a SUM over samples divided by |C| or |U| of the whole batch:
  ``promix_net_terms`` on a micro-batch's rows (``StepTargets.rows``, ``MixTargets.rows``) returns that
  micro-batch's share, and the shares add up to the whole-batch term (exact up to float summation order);
  so plain gradient accumulation of ``terms["total"]`` gives the whole-batch gradient.
* What micro-batches cannot keep: BatchNorm's batch statistics are those of each micro-batch, not of the
  reference's whole forward (x, x', the mixup and the FMix batches are separate forwards there too).

Where this differs from the reference's code, by name:

* empty sets: a term over an empty C or U is 0 and its prior is left unchanged (the reference's means
  over an empty set are NaN, which would poison its priors for good);
* ties: the class-wise small-loss order and LGA's score order are stable sorts (ties in batch / index
  order); the reference's sorts are unstable, so its tie order is arbitrary. CSS sorts the raw losses
  (the reference min-max normalises them first, an order-preserving map);
* random draws: the Beta draws, permutations, FMix spectrum and its ceil/floor coin come from a given
  ``torch.Generator`` (the Beta draws through a numpy generator seeded from it), not from numpy's,
  scipy's, Python's and torch's global generators: same distributions, reproducible per step;
* ``negative_entropy_sum`` uses ``log_softmax`` where the reference takes ``softmax(...).log()``: the
  same value wherever the reference's is finite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def upcast(x: Tensor) -> Tensor:
    """``x`` in float32, or float64 when it already is."""
    return x if x.dtype == torch.float64 else x.float()


# ---------------------------------------------------------------------------------------------
# Schedules (epochs are absolute indices from 0, warm-up included, as the reference counts them)


def linear_ramp(epoch: float, length: float) -> float:
    """The reference's ``linear_rampup2``: ``min(epoch / length, 1)`` (1 from ``epoch >= length``)."""
    if epoch < 0 or length < 0:
        raise ValueError(f"linear_ramp needs epoch >= 0 and length >= 0, got {epoch}, {length}")
    return 1.0 if epoch >= length else epoch / length


def rho_schedule(epoch: float, rho_start: float, rho_end: float, ramp_epochs: float) -> float:
    """CSS's kept fraction: ``rho_start + (rho_end - rho_start) * min(epoch / ramp_epochs, 1)``."""
    return rho_start + (rho_end - rho_start) * linear_ramp(epoch, ramp_epochs)


def unlabeled_weight(epoch: float, *, weight: float, epochs: float, debias_pl: float) -> float:
    """beta: ``weight * min(epoch / epochs, 1)``, then 0 from ``epochs`` on while it is below 1; 1 at
    every epoch when ``debias_pl`` is 0 (the reference's two rules, in its order)."""
    if debias_pl == 0:
        return 1.0
    beta = weight * linear_ramp(epoch, epochs)
    return 0.0 if (epoch >= epochs and beta < 1) else beta


def lga_enabled(epoch: int, last_epoch: int, start_expand: int) -> bool:
    """LGA runs while ``epoch > last_epoch - start_expand`` (``last_epoch``: the index of the final
    epoch, the reference's ``num_epochs`` = 600 with epochs 0..600); never with ``start_expand`` 0."""
    return start_expand > 0 and epoch > last_epoch - start_expand


# ---------------------------------------------------------------------------------------------
# Selection


def class_wise_small_loss(losses: Tensor, labels: Tensor, rho: float, num_classes: int) -> Tensor:
    """CSS: per noisy class j, the ``max(min(ceil(rho * N / K), n_j), 1)`` samples of smallest loss.

    ``losses``: per-sample CE of h with the noisy label over the whole training set [N]; returns a bool
    mask [N]. The quota is computed as the reference's float expression ``ceil(N * (1 / K) * rho)``.
    """
    if losses.shape != labels.shape or losses.ndim != 1:
        raise ValueError(f"losses {tuple(losses.shape)} and labels {tuple(labels.shape)} must be the same [N]")
    quota = math.ceil(losses.numel() * (1.0 / num_classes) * rho)
    keep = torch.zeros(losses.numel(), dtype=torch.bool, device=losses.device)
    for j in range(num_classes):
        members = (labels == j).nonzero().squeeze(1)
        if members.numel() == 0:
            continue
        count = max(min(quota, members.numel()), 1)
        order = torch.sort(losses[members], stable=True).indices[:count]
        keep[members[order]] = True
    return keep


def high_confidence(logits: Tensor, labels: Tensor, tau: float) -> Tensor:
    """MHCS: ``softmax(logits)[y] > tau`` (raw logits, no debiasing), a bool mask [B]."""
    p = F.softmax(upcast(logits.detach()), dim=1)
    return p.gather(1, labels.view(-1, 1)).squeeze(1) > tau


def label_guessing(selected: Tensor, probs_own: Tensor, probs_other: Tensor, tau: float, cap: float) -> Tensor:
    """LGA: ``selected`` (bool [B], after MHCS) plus the samples on which both networks agree.

    Only while ``|selected| / B < cap``: candidates are unselected samples whose two max-probabilities
    both exceed ``tau`` with the same argmax; at most ``int(B * cap) - |selected|`` of them are added,
    highest mean max-probability first. ``probs_*``: raw softmax of each network's h(x) [B, K].
    """
    b = selected.numel()
    n_selected = int(selected.sum())
    if n_selected / b >= cap:
        return selected.clone()
    score_own, pred_own = probs_own.max(dim=1)
    score_other, pred_other = probs_other.max(dim=1)
    candidates = ((score_own > tau) & (score_other > tau) & (pred_own == pred_other) & ~selected).nonzero().squeeze(1)
    room = max(int(b * cap) - n_selected, 0)
    if candidates.numel() > room:
        mean = (score_own + score_other)[candidates] / 2
        candidates = candidates[torch.sort(-mean, stable=True).indices[:room]]
    out = selected.clone()
    out[candidates] = True
    return out


# ---------------------------------------------------------------------------------------------
# Priors, debiasing, targets


def init_prior(num_classes: int, device: torch.device | str | None = None) -> Tensor:
    """A uniform class prior (float32, as the reference's)."""
    return torch.full((num_classes,), 1.0 / num_classes, dtype=torch.float32, device=device)


def update_prior(prior: Tensor, probs: Tensor, mask: Tensor, momentum: float, count: int | None = None) -> Tensor:
    """``momentum * prior + (1 - momentum) * mean(probs[mask])``; unchanged when ``mask`` is empty.

    ``probs``: the raw softmax of h(x) on the whole batch, detached; ``mask``: C for pi_l, U for pi_u;
    ``count``: ``mask.sum()`` when known (a mask of every row is then not indexed: the same values, and no
    shape that depends on the data, which the planner's fake tensors cannot give).
    """
    if count == mask.numel():
        chosen = probs.detach()
    elif count == 0:
        return prior.clone()
    else:
        chosen = probs.detach()[mask]
    if chosen.shape[0] == 0:
        return prior.clone()
    return momentum * prior + (1 - momentum) * chosen.mean(dim=0).to(prior.dtype)


def debias_logits(logits: Tensor, prior: Tensor, strength: float) -> Tensor:
    """The loss logits ``z + a * log(pi)`` (``a`` = debias_output); the prior carries no gradient."""
    z = upcast(logits)
    return z + strength * torch.log(prior.detach().to(z.dtype))


def debias_probs(logits: Tensor, prior: Tensor, strength: float) -> Tensor:
    """Debiased pseudo-label probabilities ``softmax(z - b * log(pi))`` (``b`` = debias_pl), detached."""
    z = upcast(logits.detach())
    return F.softmax(z - strength * torch.log(prior.detach().to(z.dtype)), dim=1)


def sharpen(p: Tensor, temperature: float) -> Tensor:
    """``p ** (1 / T)`` renormalised over the classes."""
    pt = upcast(p) ** (1.0 / temperature)
    return pt / pt.sum(dim=1, keepdim=True)


def _slice_rows(obj: object, index: slice | Tensor, names: tuple[str, ...]) -> object:
    return replace(obj, **{n: getattr(obj, n)[index] for n in names})


@dataclass(frozen=True)
class StepTargets:
    """One network's whole-batch selection products, rows aligned with its weak/strong forwards."""

    labeled: Tensor  # bool [B]: C (CSS or MHCS or LGA)
    targets: Tensor  # [B, K]: one-hot y on CSS/MHCS rows, one-hot argmax of the debiased probs on LGA rows
    pseudo: Tensor  # [B, K]: sharpen(softmax(z_h(x) - b log pi_u), T), used on U
    n_labeled: int  # |C| of the whole batch: the divisor of every C term
    n_unlabeled: int  # |U| of the whole batch
    prior_l: Tensor  # [K]: pi_l before this step's update (debiases every C term of both heads)
    prior_u: Tensor  # [K]: pi_u before this step's update (debiases the unlabeled term)

    def rows(self, index: slice | Tensor) -> StepTargets:
        """The rows of one micro-batch; the divisors and priors stay the whole batch's."""
        return _slice_rows(self, index, ("labeled", "targets", "pseudo"))

    def clean_rows(self) -> Tensor:
        """The indices of C in batch order (every row, without a data-dependent op, when all are in C)."""
        if self.n_unlabeled == 0:
            return torch.arange(self.n_labeled, device=self.labeled.device)
        return self.labeled.nonzero().squeeze(1)


def select_step(own_logits: Tensor, other_logits: Tensor, labels: Tensor, css: Tensor, prior_l: Tensor,
                prior_u: Tensor, *, tau: float, lga: bool, lga_cap: float, debias_pl: float,
                temperature: float) -> StepTargets:
    """One network's C, targets and pseudo-labels for a step, from the raw h(x) logits of both networks
    on the whole batch (``own_logits`` this network's, ``other_logits`` the peer's, for LGA only), the
    noisy labels and this network's CSS mask. Call once per network, before either prior update."""
    with torch.no_grad():
        z = upcast(own_logits.detach())
        k = z.shape[1]
        matched = css.to(torch.bool) | high_confidence(z, labels, tau)
        guess = F.one_hot(debias_probs(z, prior_l, debias_pl).argmax(dim=1), k).to(z.dtype)
        targets = torch.where(matched.view(-1, 1), F.one_hot(labels, k).to(z.dtype), guess)
        labeled = matched
        if lga:
            labeled = label_guessing(matched, F.softmax(z, dim=1), F.softmax(upcast(other_logits.detach()), dim=1),
                                     tau, lga_cap)
        pseudo = sharpen(debias_probs(z, prior_u, debias_pl), temperature)
    n_labeled = int(labeled.sum())
    return StepTargets(labeled, targets, pseudo, n_labeled, labeled.numel() - n_labeled, prior_l.detach(),
                       prior_u.detach())


def update_priors(targets: StepTargets, own_logits: Tensor, momentum: float) -> tuple[Tensor, Tensor]:
    """The step's new (pi_l, pi_u): momentum means of the raw softmax of h(x) over C and over U."""
    probs = F.softmax(upcast(own_logits.detach()), dim=1)
    return (update_prior(targets.prior_l, probs, targets.labeled, momentum, targets.n_labeled),
            update_prior(targets.prior_u, probs, ~targets.labeled, momentum, targets.n_unlabeled))


# ---------------------------------------------------------------------------------------------
# Mixup and FMix on the clean weak images


def fmix_low_freq_image(height: int, width: int, normals: Tensor, decay: float) -> np.ndarray:
    """FMix's low-frequency image in [0, 1], [height, width] float64, from ``normals`` [height, wf, 2]
    (wf = width // 2 + 1, + 1 more for an odd width: the reference's ``fftfreqnd``).

    The spectrum is ``normals / max(|f|, 1 / max(h, w)) ** decay``; the complex array is built as the
    reference's ``spectrum[:, 0] + 1j * spectrum[:, 1]`` on its [channel, row, column, 2] array, which
    takes frequency rows 0 and 1 (not the last axis) — kept as is, since it shapes the masks ProMix saw.
    """
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.fftfreq(width)[: width // 2 + 1 + width % 2]
    freqs = np.sqrt(fx * fx + fy * fy)
    n = np.asarray(normals.detach().cpu(), dtype=np.float64)
    if n.shape != (*freqs.shape, 2):
        raise ValueError(f"FMix normals must have shape {(*freqs.shape, 2)}, got {n.shape}")
    scale = 1.0 / np.maximum(freqs, 1.0 / max(height, width)) ** decay
    spectrum = scale[..., None] * n
    image = np.real(np.fft.irfftn((spectrum[0] + 1j * spectrum[1])[None], (height, width), axes=(-2, -1)))[0]
    image = image - image.min()
    return image / image.max()


def fmix_mask(height: int, width: int, lam: float, normals: Tensor, coin: float, decay: float) -> Tensor:
    """FMix's binary mask [height, width] (float64): 1 on the ``num`` largest pixels of the low-frequency
    image, ``num = ceil(lam * h * w)`` if ``coin > 0.5`` else ``floor(lam * h * w)`` (FMix's
    ``binarise_mask`` with max_soft 0)."""
    image = fmix_low_freq_image(height, width, normals, decay).reshape(-1)
    num = math.ceil(lam * image.size) if coin > 0.5 else math.floor(lam * image.size)
    mask = np.zeros(image.size)
    mask[image.argsort()[::-1][:num]] = 1.0
    return torch.from_numpy(mask.reshape(height, width))


@dataclass(frozen=True)
class MixDraws:
    """One head's random draws for one step: mixup's lambda and permutation, FMix's lambda,
    permutation and mask. The permutations index the rows of C (whole batch, batch order)."""

    mixup_lam: float  # max(l, 1 - l), l ~ Beta(mixup_alpha, mixup_alpha)
    mixup_perm: Tensor  # int64 [|C|]
    fmix_lam: float  # ~ Beta(fmix_alpha, fmix_alpha)
    fmix_perm: Tensor  # int64 [|C|]
    fmix_mask: Tensor  # float64 [H, W], 0/1


def draw_mix(n: int, height: int, width: int, generator: torch.Generator, *, mixup_alpha: float = 4.0,
             fmix_alpha: float = 1.0, decay: float = 3.0) -> MixDraws:
    """Every draw of one head's mixup and FMix over ``n`` clean samples, from ``generator`` (CPU)."""
    seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator))
    beta_rng = np.random.default_rng(seed)  # torch has no Beta sampler that takes a generator
    lam = float(beta_rng.beta(mixup_alpha, mixup_alpha))
    fmix_lam = float(beta_rng.beta(fmix_alpha, fmix_alpha))
    mixup_perm = torch.randperm(n, generator=generator)
    normals = torch.randn(height, width // 2 + 1 + width % 2, 2, generator=generator, dtype=torch.float64)
    coin = float(torch.rand((), generator=generator, dtype=torch.float64))
    fmix_perm = torch.randperm(n, generator=generator)
    return MixDraws(max(lam, 1 - lam), mixup_perm, fmix_lam, fmix_perm,
                    fmix_mask(height, width, fmix_lam, normals, coin, decay))


def mixup(images: Tensor, lam: float, perm: Tensor) -> Tensor:
    """``lam * x + (1 - lam) * x[perm]`` (images of C, [|C|, ...])."""
    return lam * images + (1 - lam) * images[perm.to(images.device)]


def fmix(images: Tensor, mask: Tensor, perm: Tensor) -> Tensor:
    """``mask * x + (1 - mask) * x[perm]``, one [H, W] mask for the whole batch of C."""
    m = mask.to(device=images.device, dtype=images.dtype)
    return m * images + (1 - m) * images[perm.to(images.device)]


@dataclass(frozen=True)
class MixTargets:
    """One head's mixup and FMix targets, rows aligned with its mixup and FMix forwards (both |C|)."""

    mix: Tensor  # [|C|, K]: lam t + (1 - lam) t[perm], soft
    fmix_a: Tensor  # int64 [|C|]: argmax of t (hard labels, as FMix's loss)
    fmix_b: Tensor  # int64 [|C|]: argmax of t[fmix_perm]
    fmix_lam: float

    def rows(self, index: slice | Tensor) -> MixTargets:
        """The rows of one micro-batch of the mixup and FMix forwards (split alike)."""
        return _slice_rows(self, index, ("mix", "fmix_a", "fmix_b"))


def mix_targets(clean_targets: Tensor, draws: MixDraws) -> MixTargets:
    """Targets of the mixed batches from the targets of C (``StepTargets.targets[labeled]``)."""
    t = upcast(clean_targets.detach())
    mixup_perm, fmix_perm = draws.mixup_perm.to(t.device), draws.fmix_perm.to(t.device)
    hard = t.argmax(dim=1)
    return MixTargets(draws.mixup_lam * t + (1 - draws.mixup_lam) * t[mixup_perm], hard, hard[fmix_perm],
                      draws.fmix_lam)


# ---------------------------------------------------------------------------------------------
# Loss terms (sums over samples; the caller's divisor is the whole batch's |C| or |U|)


def soft_ce(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-sample soft cross-entropy ``-sum_k t_k log softmax(z)_k`` [n]."""
    return -(upcast(targets.detach()) * F.log_softmax(upcast(logits), dim=1)).sum(dim=1)


def _masked_sum(per_sample: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return per_sample.sum()
    return torch.where(mask, per_sample, torch.zeros_like(per_sample)).sum()


def negative_entropy_sum(logits: Tensor) -> Tensor:
    """Sum over samples of ``sum_k p_k log p_k`` with ``p = softmax(max(z, 1e-12))`` (the reference's
    warm-up penalty on asymmetric noise clamps the logits themselves); divide by the batch size."""
    z = upcast(logits).clamp(min=1e-12)
    return (F.softmax(z, dim=1) * F.log_softmax(z, dim=1)).sum()


def warmup_net_terms(logits: Tensor, labels: Tensor, *, penalty: bool, batch_size: int) -> dict[str, Tensor]:
    """One network's warm-up loss on these rows: CE of h on the noisy labels (+ the negative entropy
    when ``penalty``), as sums divided by the whole batch's ``batch_size``."""
    ce = F.cross_entropy(upcast(logits), labels, reduction="sum") / batch_size
    terms = {"ce": ce}
    terms["penalty"] = negative_entropy_sum(logits) / batch_size if penalty else ce.new_zeros(())
    terms["total"] = ce + terms["penalty"]
    return terms


@dataclass(frozen=True)
class HeadLogits:
    """One head's logits from every forward of one network (rows of one micro-batch or all)."""

    weak: Tensor  # H(x) [n, K]
    strong: Tensor  # H(x') [n, K]
    mix: Tensor  # H(mixup of C) [m, K] (this head's own mixup forward)
    fmix: Tensor  # H(FMix of C) [m, K] (this head's own FMix forward)


def _head_terms(head: HeadLogits, t: StepTargets, mix: MixTargets, debias_output: float) -> dict[str, Tensor]:
    divisor = max(t.n_labeled, 1)

    def debiased(z: Tensor) -> Tensor:
        return debias_logits(z, t.prior_l, debias_output)

    fmix_z = debiased(head.fmix)
    fmix_ce = (mix.fmix_lam * F.cross_entropy(fmix_z, mix.fmix_a, reduction="sum")
               + (1 - mix.fmix_lam) * F.cross_entropy(fmix_z, mix.fmix_b, reduction="sum"))
    return {"ce": _masked_sum(soft_ce(debiased(head.weak), t.targets), t.labeled) / divisor,
            "cr": _masked_sum(soft_ce(debiased(head.strong), t.targets), t.labeled) / divisor,
            "mix": soft_ce(debiased(head.mix), mix.mix).sum() / divisor,
            "fmix": fmix_ce / divisor}


def promix_net_terms(h: HeadLogits, ap: HeadLogits, t: StepTargets, mix_h: MixTargets, mix_ap: MixTargets, *,
                     w: float, beta: float, debias_output: float) -> dict[str, Tensor]:
    """Every loss term of one network on these rows, and the network's total.

    Per head H in {h, h_AP} (keys ``h_*``, ``ap_*``), soft CE on the debiased logits ``z + a log pi_l``:
    ``ce`` on H(x), ``cr`` on H(x'), both over C against ``t.targets``; ``mix`` on H's mixup forward
    against the mixed soft targets; ``fmix`` = lam CE(y_a) + (1 - lam) CE(y_b) on H's FMix forward. The
    unlabeled term of h_AP (``ap_u``), over U with logits ``z + a log pi_u``: CE(h_AP(x), q) +
    w CE(h_AP(x'), q). ``total`` = sum_H [ce + w (cr + mix + fmix)] + beta ap_u.

    Each value is this micro-batch's share: sums over its rows divided by the whole batch's |C| (or
    |U|), so the values of all micro-batches add up to the whole-batch terms. The loss terms of both
    networks add to the reference's step loss (one backward through both).
    """
    terms = {f"h_{k}": v for k, v in _head_terms(h, t, mix_h, debias_output).items()}
    terms |= {f"ap_{k}": v for k, v in _head_terms(ap, t, mix_ap, debias_output).items()}
    unlabeled = ~t.labeled
    q = t.pseudo
    u_weak = _masked_sum(soft_ce(debias_logits(ap.weak, t.prior_u, debias_output), q), unlabeled)
    u_strong = _masked_sum(soft_ce(debias_logits(ap.strong, t.prior_u, debias_output), q), unlabeled)
    terms["ap_u"] = (u_weak + w * u_strong) / max(t.n_unlabeled, 1)
    total = beta * terms["ap_u"]
    for head in ("h", "ap"):
        total = total + terms[f"{head}_ce"] + w * (terms[f"{head}_cr"] + terms[f"{head}_mix"] + terms[f"{head}_fmix"])
    terms["total"] = total
    return terms

