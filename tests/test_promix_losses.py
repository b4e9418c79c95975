"""ProMix's selection, targets, priors, mixing and loss terms against an independent formulation.

The expected values are written from /work/shared/reference/promix.md's wording, sample by sample with
loops and numpy in float64; they never call the functions under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tcl_lite.config import ConfigError
from tcl_lite.methods.promix.config import ProMixConfig
from tcl_lite.methods.promix.losses import (
    HeadLogits,
    MixDraws,
    StepTargets,
    class_wise_small_loss,
    debias_logits,
    debias_probs,
    draw_mix,
    fmix,
    fmix_mask,
    high_confidence,
    init_prior,
    label_guessing,
    lga_enabled,
    linear_ramp,
    mix_targets,
    mixup,
    negative_entropy_sum,
    promix_net_terms,
    rho_schedule,
    select_step,
    unlabeled_weight,
    update_prior,
    update_priors,
    warmup_net_terms,
)

B, K, S = 12, 4, 6  # batch, classes, image side
TAU, CAP, A, BPL, T, M = 0.9, 0.75, 0.8, 0.6, 0.5, 0.99
PI_L = np.array([0.4, 0.3, 0.2, 0.1])
PI_U = np.array([0.1, 0.2, 0.3, 0.4])


def _softmax(z) -> list[float]:
    m = max(z)
    e = [math.exp(v - m) for v in z]
    return [v / sum(e) for v in e]


def _soft_ce(z, t) -> float:
    p = _softmax(z)
    return -sum(t[k] * math.log(p[k]) for k in range(len(z)))


def _onehot(c: int) -> list[float]:
    return [1.0 if k == c else 0.0 for k in range(K)]


def _argmax(v) -> int:
    return max(range(len(v)), key=lambda k: (v[k], -k))


# ---------------------------------------------------------------------------------------------
# The constructed step: two networks with two linear heads each on flattened images; the weak-view
# logits of h get a per-sample offset that fixes what CSS, MHCS and LGA select.

LABELS = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3]
CSS = {1: [1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0], 2: [0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]}


def _offsets() -> dict[int, np.ndarray]:
    """Net 1: samples 3, 4 confident in their label (MHCS), 5 not quite; 6..10 both nets confident in
    the same class, not their label (LGA candidates, scores 6 > 8 > 7 > 10 > 9, so 9 is the one the cap
    cuts); 11: both confident but disagreeing. Net 2 has the same candidates and its own MHCS samples."""
    o1, o2 = np.zeros((B, K)), np.zeros((B, K))
    o1[3, 3] = o1[4, 0] = 9.0
    o1[5, 1] = 1.5
    for i, (c, s) in zip(range(6, 11), [(1, 13.0), (0, 11.0), (3, 12.0), (3, 7.0), (1, 10.0)]):
        o1[i, c] = s
        o2[i, c] = s
    o1[11, 0] = o2[11, 1] = 10.0
    o2[0, 0] = o2[2, 2] = 9.0
    return {1: o1, 2: o2}


def _params(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    d = 3 * S * S
    return {"W_h": rng.normal(0, 0.05, (K, d)), "b_h": rng.normal(0, 0.1, K),
            "W_ap": rng.normal(0, 0.05, (K, d)), "b_ap": rng.normal(0, 0.1, K)}


def _images(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (B, 3, S, S))


DRAWS = {  # fixed mixing draws per head of network 1: mixup lambda (already max(l, 1 - l)) and the rest
    "h": dict(mixup_lam=0.7, mixup_perm=[3, 0, 6, 1, 7, 2, 8, 4, 5],
              fmix_lam=0.35, fmix_perm=[1, 2, 0, 4, 3, 6, 5, 8, 7]),
    "ap": dict(mixup_lam=0.55, mixup_perm=[8, 7, 6, 5, 4, 3, 2, 1, 0],
               fmix_lam=0.8, fmix_perm=[2, 3, 4, 5, 6, 7, 8, 0, 1]),
}


def _masks() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {h: (rng.random((S, S)) < 0.5).astype(np.float64) for h in DRAWS}


# ---------------------------------------------------------------------------------------------
# The reference, sample by sample (promix.md, "Each epoch after warm-up", step 2)


def _logits(p: dict, head: str, x: np.ndarray) -> list[list[float]]:
    return [list(p[f"W_{head}"] @ x[i].reshape(-1) + p[f"b_{head}"]) for i in range(len(x))]


def _reference_step(x, xs, p1, p2, w: float, beta: float, lga: bool) -> dict:
    """Network 1's C, targets, q, loss terms and new priors."""
    off = _offsets()
    z1 = [[v + off[1][i][k] for k, v in enumerate(row)] for i, row in enumerate(_logits(p1, "h", x))]
    z2 = [[v + off[2][i][k] for k, v in enumerate(row)] for i, row in enumerate(_logits(p2, "h", x))]
    px1, px2 = [_softmax(z) for z in z1], [_softmax(z) for z in z2]
    # MHCS, then the targets: y on CSS/MHCS, else the argmax of softmax(z - b log pi_l)
    wsel = [CSS[1][i] == 1 or px1[i][LABELS[i]] > TAU for i in range(B)]
    targets = []
    for i in range(B):
        debiased = _softmax([z1[i][k] - BPL * math.log(PI_L[k]) for k in range(K)])
        targets.append(_onehot(LABELS[i]) if wsel[i] else _onehot(_argmax(debiased)))
    chosen = [i for i in range(B) if wsel[i]]
    if lga and len(chosen) / B < CAP:
        cands = [i for i in range(B) if not wsel[i] and max(px1[i]) > TAU and max(px2[i]) > TAU
                 and _argmax(px1[i]) == _argmax(px2[i])]
        room = int(B * CAP) - len(chosen)
        cands = sorted(cands, key=lambda i: -(max(px1[i]) + max(px2[i])) / 2)[:room]
        chosen = sorted(chosen + cands)
    unchosen = [i for i in range(B) if i not in chosen]
    masks = _masks()
    out = {"C": chosen, "U": unchosen, "targets": targets}
    for head in ("h", "ap"):
        zw, zs = _logits(p1, head, x), _logits(p1, head, xs)
        if head == "h":
            zw = z1  # the offsets are part of h(x)
        debias = [A * math.log(PI_L[k]) for k in range(K)]
        for key, z in (("ce", zw), ("cr", zs)):  # weak and strong view, over C
            out[f"{head}_{key}"] = sum(_soft_ce([z[i][k] + debias[k] for k in range(K)], targets[i])
                                       for i in chosen) / len(chosen)
        d = DRAWS[head]
        lam, perm = d["mixup_lam"], d["mixup_perm"]
        xm = np.stack([lam * x[chosen[r]] + (1 - lam) * x[chosen[perm[r]]] for r in range(len(chosen))])
        tm = [[lam * targets[chosen[r]][k] + (1 - lam) * targets[chosen[perm[r]]][k] for k in range(K)]
              for r in range(len(chosen))]
        zm = _logits(p1, head, xm)
        out[f"{head}_mix"] = sum(_soft_ce([zm[r][k] + debias[k] for k in range(K)], tm[r])
                                 for r in range(len(chosen))) / len(chosen)
        lam, perm, mask = d["fmix_lam"], d["fmix_perm"], masks[head]
        xf = np.stack([mask * x[chosen[r]] + (1 - mask) * x[chosen[perm[r]]] for r in range(len(chosen))])
        zf = _logits(p1, head, xf)
        fm = 0.0
        for r in range(len(chosen)):
            zr = [zf[r][k] + debias[k] for k in range(K)]
            fm += lam * _soft_ce(zr, _onehot(_argmax(targets[chosen[r]])))
            fm += (1 - lam) * _soft_ce(zr, _onehot(_argmax(targets[chosen[perm[r]]])))
        out[f"{head}_fmix"] = fm / len(chosen)
    # unlabeled term of h_AP: q = sharpen(softmax(z_h(x) - b log pi_u), T), logits z + a log pi_u
    zw, zs = _logits(p1, "ap", x), _logits(p1, "ap", xs)
    lu = 0.0
    for i in unchosen:
        q = _softmax([z1[i][k] - BPL * math.log(PI_U[k]) for k in range(K)])
        q = [v ** (1 / T) for v in q]
        q = [v / sum(q) for v in q]
        lu += _soft_ce([zw[i][k] + A * math.log(PI_U[k]) for k in range(K)], q)
        lu += w * _soft_ce([zs[i][k] + A * math.log(PI_U[k]) for k in range(K)], q)
    out["ap_u"] = lu / len(unchosen)
    out["total"] = beta * out["ap_u"] + sum(out[f"{h}_ce"] + w * (out[f"{h}_cr"] + out[f"{h}_mix"] + out[f"{h}_fmix"])
                                            for h in ("h", "ap"))
    out["pi_l"] = [M * PI_L[k] + (1 - M) * sum(px1[i][k] for i in chosen) / len(chosen) for k in range(K)]
    out["pi_u"] = [M * PI_U[k] + (1 - M) * sum(px1[i][k] for i in unchosen) / len(unchosen) for k in range(K)]
    return out


# ---------------------------------------------------------------------------------------------
# The same step through the functions under test


class TwoHeads(torch.nn.Module):
    def __init__(self, p: dict[str, np.ndarray], dtype: torch.dtype) -> None:
        super().__init__()
        self.h = torch.nn.Linear(3 * S * S, K).to(dtype)
        self.ap = torch.nn.Linear(3 * S * S, K).to(dtype)
        with torch.no_grad():
            for head in ("h", "ap"):
                getattr(self, head).weight.copy_(torch.from_numpy(p[f"W_{head}"]))
                getattr(self, head).bias.copy_(torch.from_numpy(p[f"b_{head}"]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = x.flatten(1)
        return self.h(f), self.ap(f)


def _draws(dtype: torch.dtype) -> dict[str, MixDraws]:
    masks = _masks()
    return {h: MixDraws(d["mixup_lam"], torch.tensor(d["mixup_perm"]), d["fmix_lam"], torch.tensor(d["fmix_perm"]),
                        torch.from_numpy(masks[h])) for h, d in DRAWS.items()}


def _setup(dtype: torch.dtype, lga: bool = True):
    x, xs = (torch.from_numpy(a).to(dtype) for a in (_images(0), _images(1)))
    net1, net2 = TwoHeads(_params(2), dtype), TwoHeads(_params(3), dtype)
    off = {n: torch.from_numpy(o).to(dtype) for n, o in _offsets().items()}
    with torch.no_grad():  # the whole-batch, no-grad pass that fixes the selection
        z1, z2 = net1(x)[0] + off[1], net2(x)[0] + off[2]
    prior_dtype = torch.float64 if dtype == torch.float64 else torch.float32  # float32 as the reference's
    pl, pu = torch.tensor(PI_L, dtype=prior_dtype), torch.tensor(PI_U, dtype=prior_dtype)
    t = select_step(z1, z2, torch.tensor(LABELS), torch.tensor(CSS[1], dtype=torch.bool), pl, pu, tau=TAU, lga=lga,
                    lga_cap=CAP, debias_pl=BPL, temperature=T)
    return x, xs, net1, off[1], t, z1


def _terms(dtype: torch.dtype, w: float, beta: float, parts: int = 1, lga: bool = True):
    """Network 1's terms summed over ``parts`` micro-batches (rows of x and of the mixed batches)."""
    x, xs, net1, off, t, z1 = _setup(dtype, lga)
    draws = _draws(dtype)
    xc = x[t.labeled]
    mixed, mts = {}, {}
    for head, d in draws.items():
        mixed[head] = (mixup(xc, d.mixup_lam, d.mixup_perm), fmix(xc, d.fmix_mask, d.fmix_perm))
        mts[head] = mix_targets(t.targets[t.labeled], d)
    total: dict[str, torch.Tensor] = {}
    for rows, mrows in zip(torch.arange(B).tensor_split(parts), torch.arange(len(xc)).tensor_split(parts), strict=True):
        hw, aw = net1(x[rows])
        hs, as_ = net1(xs[rows])
        logits = {}
        for j, head in enumerate(("h", "ap")):
            logits[head] = HeadLogits(weak=(hw + off[rows]) if head == "h" else aw, strong=hs if head == "h" else as_,
                                      mix=net1(mixed[head][0][mrows])[j], fmix=net1(mixed[head][1][mrows])[j])
        terms = promix_net_terms(logits["h"], logits["ap"], t.rows(rows), mts["h"].rows(mrows), mts["ap"].rows(mrows),
                                 w=w, beta=beta, debias_output=A)
        terms["total"].backward()
        for k, v in terms.items():
            total[k] = total.get(k, 0.0) + v.detach()
    grads = torch.cat([p.grad.flatten() for p in net1.parameters()])
    return t, total, grads, z1


TERM_KEYS = ("h_ce", "h_cr", "h_mix", "h_fmix", "ap_ce", "ap_cr", "ap_mix", "ap_fmix", "ap_u", "total")


def test_selection_of_the_constructed_step() -> None:
    """CSS {0,1,2} + MHCS {3,4} (5 is below tau) + LGA: candidates 6..10 agree (11 disagrees), room
    int(12 * 0.75) - 5 = 4 takes the four strongest (9, the weakest, is left out); LGA targets are
    the argmax of the debiased probabilities, the others the noisy label."""
    t, _, _, z1 = _terms(torch.float64, 1.0, 0.1)
    ref = _reference_step(_images(0), _images(1), _params(2), _params(3), 1.0, 0.1, lga=True)
    assert ref["C"] == [0, 1, 2, 3, 4, 6, 7, 8, 10]
    assert torch.nonzero(t.labeled).squeeze(1).tolist() == ref["C"]
    assert (t.n_labeled, t.n_unlabeled) == (9, 3)
    assert t.targets.tolist() == ref["targets"]
    assert t.targets[6].argmax() == 1 and t.targets[6].argmax() != LABELS[6]  # a guessed label
    off = _setup(torch.float64, lga=False)[4]
    assert torch.nonzero(off.labeled).squeeze(1).tolist() == [0, 1, 2, 3, 4]  # LGA off: CSS + MHCS only


@pytest.mark.parametrize("epoch", [10, 30, 60, 120])
def test_terms_match_the_reference_in_float64(epoch: int) -> None:
    """Every term of both heads, the unlabeled term and the total, with w(e) = min(e / 50, 1) and
    beta(e) = 0.1 min(e / 100, 1) before epoch 100, then 0."""
    w_ref = min(epoch / 50, 1.0)
    beta_ref = 0.1 * min(epoch / 100, 1.0) if epoch < 100 else 0.0
    w = linear_ramp(epoch, 50)
    beta = unlabeled_weight(epoch, weight=0.1, epochs=100, debias_pl=BPL)
    assert (w, beta) == pytest.approx((w_ref, beta_ref), abs=1e-15)
    _, terms, _, _ = _terms(torch.float64, w, beta)
    ref = _reference_step(_images(0), _images(1), _params(2), _params(3), w_ref, beta_ref, lga=True)
    for key in TERM_KEYS:
        assert terms[key].item() == pytest.approx(ref[key], rel=1e-10, abs=1e-12), key
    assert all(terms[k].item() > 0 for k in TERM_KEYS if k != "total")


def test_terms_match_the_reference_in_float32() -> None:
    """float32 inputs (priors float32, as the reference's): within 2e-6 relative of the float64 values."""
    _, terms, _, _ = _terms(torch.float32, 0.6, 0.03)
    ref = _reference_step(_images(0), _images(1), _params(2), _params(3), 0.6, 0.03, lga=True)
    for key in TERM_KEYS:
        assert terms[key].dtype == torch.float32
        assert terms[key].item() == pytest.approx(ref[key], rel=2e-6), key


@pytest.mark.parametrize("parts", [2, 4])
def test_micro_batches_add_up_to_the_whole_batch(parts: int) -> None:
    """The sum-plus-divisor form: 1, 2 and 4 micro-batches give the same terms and the same gradient."""
    _, whole, g_whole, _ = _terms(torch.float64, 0.6, 0.03, parts=1)
    _, split, g_split, _ = _terms(torch.float64, 0.6, 0.03, parts=parts)
    for key in TERM_KEYS:
        assert split[key].item() == pytest.approx(whole[key].item(), rel=1e-12), key
    assert torch.allclose(g_split, g_whole, rtol=1e-11, atol=1e-13)


def test_prior_update_over_the_clean_and_the_unlabeled_samples() -> None:
    t, _, _, z1 = _terms(torch.float64, 1.0, 0.1)
    ref = _reference_step(_images(0), _images(1), _params(2), _params(3), 1.0, 0.1, lga=True)
    pi_l, pi_u = update_priors(t, z1, M)
    assert pi_l.tolist() == pytest.approx(ref["pi_l"], rel=1e-12)
    assert pi_u.tolist() == pytest.approx(ref["pi_u"], rel=1e-12)
    # an empty set leaves its prior as it was (the reference's mean would be NaN)
    prior = init_prior(K)
    assert torch.equal(prior, torch.full((K,), 0.25))
    assert torch.equal(update_prior(prior, torch.rand(5, K), torch.zeros(5, dtype=torch.bool), M), prior)


def test_debiased_logits_pseudo_labels_and_sharpening() -> None:
    rng = np.random.default_rng(4)
    z = rng.normal(0, 2, (5, K))
    prior = torch.tensor(PI_U)
    out = debias_logits(torch.from_numpy(z), prior, A)
    probs = debias_probs(torch.from_numpy(z), prior, BPL)
    for i in range(5):
        assert out[i].tolist() == pytest.approx([z[i, k] + A * math.log(PI_U[k]) for k in range(K)], rel=1e-14)
        assert probs[i].tolist() == pytest.approx(_softmax([z[i, k] - BPL * math.log(PI_U[k]) for k in range(K)]),
                                                  rel=1e-12)


# ---------------------------------------------------------------------------------------------
# Selection rules on constructed cases


def test_class_wise_small_loss_keeps_rho_of_each_class() -> None:
    """N = 20, K = 4, rho 0.5: quota ceil(20 / 4 * 0.5) = 3 per class; class 2 has only 2 samples (both
    kept), class 3 none; each class keeps its own smallest losses, whatever the other classes' losses."""
    labels = torch.tensor([0] * 9 + [1] * 9 + [2] * 2)
    losses = torch.tensor([5., 1., 4., 0.5, 9., 2., 8., 7., 6.] + [0.1, 0.9, 0.2, 0.8, 0.3, 0.7, 0.4, 0.6, 0.05]
                          + [100., 50.])
    keep = class_wise_small_loss(losses, labels, 0.5, 4)
    assert torch.nonzero(keep).squeeze(1).tolist() == [1, 3, 5, 9, 11, 17, 18, 19]
    assert rho_schedule(0, 0.2, 0.6, 50) == 0.2 and rho_schedule(25, 0.2, 0.6, 50) == pytest.approx(0.4)
    assert rho_schedule(80, 0.2, 0.6, 50) == 0.6
    keep = class_wise_small_loss(losses, labels, rho_schedule(25, 0.2, 0.6, 50), 4)  # quota ceil(2) = 2
    assert torch.nonzero(keep).squeeze(1).tolist() == [1, 3, 9, 17, 18, 19]


def test_high_confidence_is_strictly_above_tau_on_raw_logits() -> None:
    p = torch.tensor([[0.995, 0.005], [0.985, 0.015], [0.2, 0.8], [0.99, 0.01]], dtype=torch.float64)
    assert high_confidence(p.log(), torch.tensor([0, 0, 1, 0]), 0.99).tolist() == [True, False, False, False]


def _probs(rows: list[tuple[int, float]]) -> torch.Tensor:
    """Rows with max-probability ``s`` on class ``c``, the rest spread evenly."""
    out = torch.full((len(rows), K), 0.0, dtype=torch.float64)
    for i, (c, s) in enumerate(rows):
        out[i] = (1 - s) / (K - 1)
        out[i, c] = s
    return out


def test_label_guessing_agreement_order_and_cap() -> None:
    """B = 10, rows 0-2 selected. Candidates need both max-probabilities > tau and the same argmax:
    row 3 disagrees, row 4's peer is not confident, rows 5-9 qualify (mean scores 6 > 8 > 5 > 7 > 9).
    cap 0.8: room int(8) - 3 = 5, all five added; cap 0.7: room 4, row 9 (lowest) left out; cap 0.6:
    room 3; at |C| / B >= cap nothing is added."""
    selected = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0, 0, 0], dtype=torch.bool)
    own = _probs([(0, .5), (1, .5), (2, .5), (0, .99), (1, .99), (2, .95), (3, .97), (0, .96), (1, .999), (2, .93)])
    peer = _probs([(0, .5), (1, .5), (2, .5), (1, .99), (1, .8), (2, .99), (3, .98), (0, .96), (1, .95), (2, .94)])

    def chosen(cap: float) -> list[int]:
        return torch.nonzero(label_guessing(selected, own, peer, 0.9, cap)).squeeze(1).tolist()

    assert chosen(0.8) == [0, 1, 2, 5, 6, 7, 8, 9]
    assert chosen(0.7) == [0, 1, 2, 5, 6, 7, 8]
    assert chosen(0.6) == [0, 1, 2, 5, 6, 8]
    assert chosen(0.3) == [0, 1, 2]
    # rows of equal mean score: the earlier row first (a stable order)
    tie = _probs([(0, .95)] * 4)
    out = label_guessing(torch.zeros(4, dtype=torch.bool), tie, tie, 0.9, 0.5)
    assert torch.nonzero(out).squeeze(1).tolist() == [0, 1]


def test_lga_starts_after_its_epoch() -> None:
    assert not lga_enabled(350, 600, 250) and lga_enabled(351, 600, 250) and lga_enabled(600, 600, 250)
    assert not lga_enabled(600, 600, 0)


def test_schedules_at_the_reference_epochs() -> None:
    assert [linear_ramp(e, 50) for e in (0, 10, 25, 50, 300)] == [0.0, 0.2, 0.5, 1.0, 1.0]
    beta = [unlabeled_weight(e, weight=0.1, epochs=100, debias_pl=0.8) for e in (0, 10, 50, 99, 100, 400)]
    assert beta == pytest.approx([0.0, 0.01, 0.05, 0.099, 0.0, 0.0])
    assert unlabeled_weight(400, weight=0.1, epochs=100, debias_pl=0.0) == 1.0  # no debiasing: beta = 1


# ---------------------------------------------------------------------------------------------
# Mixing


def _reference_fmix_image(normals: np.ndarray, h: int, w: int, decay: float) -> np.ndarray:
    """FMix's make_low_freq_image as its source builds it: [ch, h, wf, 2] spectrum, then
    ``spectrum[:, 0] + 1j * spectrum[:, 1]`` and irfftn to (h, w)."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[: w // 2 + 2] if w % 2 == 1 else np.fft.fftfreq(w)[: w // 2 + 1]
    freqs = np.sqrt(fx * fx + fy * fy)
    scale = np.ones(1) / (np.maximum(freqs, np.array([1.0 / max(w, h, 0)])) ** decay)
    spectrum = np.expand_dims(scale, -1)[None, :] * normals[None]
    spectrum = spectrum[:, 0] + 1j * spectrum[:, 1]
    mask = np.real(np.fft.irfftn(spectrum, (h, w), axes=(-2, -1)))[:1, :h, :w]
    mask = mask - mask.min()
    return (mask / mask.max())[0]


@pytest.mark.parametrize("shape", [(32, 32), (16, 16), (12, 9)])
@pytest.mark.parametrize("coin", [0.3, 0.7])
def test_fmix_mask_is_the_reference_construction(shape: tuple[int, int], coin: float) -> None:
    h, w = shape
    g = torch.Generator().manual_seed(h * w)
    normals = torch.randn(h, w // 2 + 1 + w % 2, 2, generator=g, dtype=torch.float64)
    lam = 0.3712
    mask = fmix_mask(h, w, lam, normals, coin, 3.0)
    image = _reference_fmix_image(normals.numpy(), h, w, 3.0)
    num = math.ceil(lam * h * w) if coin > 0.5 else math.floor(lam * h * w)
    expected = np.zeros(h * w)
    expected[np.argsort(image.reshape(-1))[::-1][:num]] = 1.0
    assert mask.shape == (h, w) and np.array_equal(mask.numpy().reshape(-1), expected)
    assert mask.sum().item() == num


def test_draw_mix_is_reproducible_and_distributed_as_the_reference() -> None:
    a = draw_mix(9, 8, 8, torch.Generator().manual_seed(5))
    b = draw_mix(9, 8, 8, torch.Generator().manual_seed(5))
    assert a.mixup_lam == b.mixup_lam and torch.equal(a.fmix_mask, b.fmix_mask)
    assert torch.equal(a.mixup_perm, b.mixup_perm)
    assert sorted(a.mixup_perm.tolist()) == list(range(9)) and sorted(a.fmix_perm.tolist()) == list(range(9))
    g = torch.Generator().manual_seed(0)
    draws = [draw_mix(4, 8, 8, g) for _ in range(2000)]
    lam = np.array([d.mixup_lam for d in draws])
    flam = np.array([d.fmix_lam for d in draws])
    # max(l, 1 - l), l ~ Beta(4, 4): mean 0.5 + E|l - 0.5| = 0.5 + 0.1283 (numerical integration below)
    ls = np.linspace(0, 1, 200001)
    pdf = ls ** 3 * (1 - ls) ** 3 * 140
    expected = np.trapezoid(np.maximum(ls, 1 - ls) * pdf, ls)
    assert lam.min() >= 0.5 and abs(lam.mean() - expected) < 0.005
    assert abs(flam.mean() - 0.5) < 0.02 and abs(flam.var() - 1 / 12) < 0.006  # Beta(1, 1)
    means = np.array([d.fmix_mask.mean().item() for d in draws])
    assert np.abs(means - flam).max() <= 1 / 64 + 1e-12  # the mask's mean is lam, to one pixel


def test_mixup_fmix_images_and_targets() -> None:
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    perm = torch.tensor([2, 0, 3, 1])
    m = mixup(x, 0.7, perm)
    for r in range(4):
        assert torch.allclose(m[r], 0.7 * x[r] + 0.3 * x[perm[r]])
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    f = fmix(x, mask, perm)
    for r in range(4):
        assert torch.equal(f[r, :, 0, 0], x[r, :, 0, 0]) and torch.equal(f[r, :, 0, 1], x[perm[r], :, 0, 1])
    t = torch.eye(K, dtype=torch.float64)
    mt = mix_targets(t, MixDraws(0.7, perm, 0.25, torch.tensor([1, 2, 3, 0]), mask))
    assert torch.allclose(mt.mix[0], 0.7 * t[0] + 0.3 * t[2])
    assert mt.fmix_a.tolist() == [0, 1, 2, 3] and mt.fmix_b.tolist() == [1, 2, 3, 0] and mt.fmix_lam == 0.25


def test_warmup_terms_and_negative_entropy_with_clamped_logits() -> None:
    z = torch.tensor([[2.0, -1.0, 0.5], [-3.0, -2.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 2])
    ne = 0.0
    for row in z.tolist():
        p = _softmax([max(v, 1e-12) for v in row])
        ne += sum(v * math.log(v) for v in p)
    assert negative_entropy_sum(z).item() == pytest.approx(ne, rel=1e-12)
    terms = warmup_net_terms(z, y, penalty=True, batch_size=4)
    ce = sum(-math.log(_softmax(row)[c]) for row, c in zip(z.tolist(), y.tolist()))
    assert terms["ce"].item() == pytest.approx(ce / 4, rel=1e-12)
    assert terms["total"].item() == pytest.approx((ce + ne) / 4, rel=1e-12)
    assert warmup_net_terms(z, y, penalty=False, batch_size=2)["penalty"].item() == 0.0


def test_empty_sets_give_zero_terms() -> None:
    """All samples clean: the unlabeled term is 0 (the reference's mean over no sample is NaN)."""
    z = torch.randn(4, K, dtype=torch.float64, requires_grad=True)
    t = StepTargets(torch.ones(4, dtype=torch.bool), torch.eye(K, dtype=torch.float64), torch.full((4, K), 0.25),
                    4, 0, init_prior(K).double(), init_prior(K).double())
    draws = MixDraws(0.7, torch.arange(4), 0.5, torch.arange(4), torch.ones(2, 2, dtype=torch.float64))
    mt = mix_targets(t.targets, draws)
    head = HeadLogits(z, z, z, z)
    terms = promix_net_terms(head, head, t, mt, mt, w=1.0, beta=0.1, debias_output=A)
    assert terms["ap_u"].item() == 0.0 and torch.isfinite(terms["total"])


def test_config_defaults_and_cross_checks() -> None:
    cfg = ProMixConfig()
    assert (cfg.rho_start, cfg.rho_end, cfg.tau, cfg.warmup_epochs, cfg.debias_output, cfg.debias_pl) == \
        (0.5, 0.5, 0.99, 10, 0.8, 0.8)
    assert (cfg.prior_momentum, cfg.start_expand, cfg.lga_cap, cfg.mixup_alpha, cfg.fmix_alpha, cfg.fmix_decay,
            cfg.temperature, cfg.w_ramp_epochs, cfg.rho_ramp_epochs, cfg.unlabeled_weight,
            cfg.unlabeled_epochs) == (0.9999, 250, 0.9, 4.0, 1.0, 3.0, 0.5, 50, 50, 0.1, 100)
    cfg.validate()
    with pytest.raises(ConfigError, match="promix.rho_start"):
        ProMixConfig(rho_start=0.2, rho_end=0.6, rho_ramp_epochs=0).validate()
    with pytest.raises(ConfigError, match="promix.unlabeled_epochs"):
        ProMixConfig(unlabeled_epochs=0).validate()
    ProMixConfig(unlabeled_epochs=0, debias_pl=0.0).validate()  # beta is 1 then: no conflict
