"""Each TCL loss term against an independent computation: explicit loops over numpy float64 arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tcl_lite.methods.tcl.losses import (
    corrected_targets,
    entropy_terms,
    mixup_targets,
    nt_xent,
    soft_cross_entropy,
    tcl_terms,
)

B, K, D = 4, 3, 5


def _fixed(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "l1": torch.randn(B, K, generator=g), "l2": torch.randn(B, K, generator=g),
        "lm": torch.randn(3 * B, K, generator=g),
        "z1": F.normalize(torch.randn(B, D, generator=g), dim=1),
        "z2": F.normalize(torch.randn(B, D, generator=g), dim=1),
        "zm": F.normalize(torch.randn(3 * B, D, generator=g), dim=1),
        "mu": F.normalize(torch.randn(K, D, generator=g), dim=1),
        "y": torch.tensor([0, 2, 1, 2]), "w": torch.tensor([0.9, 0.1, 0.5, 1.0]),
    }


def _softmax_row(row):
    e = [math.exp(v - max(row)) for v in row]
    return [v / sum(e) for v in e]


def _ce_row(logits_row, target_row):
    p = _softmax_row(logits_row)
    return -sum(t * math.log(q) for t, q in zip(target_row, p))


def _ce(logits, targets):
    logits, targets = np.asarray(logits, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    return sum(_ce_row(list(lr), list(tr)) for lr, tr in zip(logits, targets)) / len(logits)


def test_soft_cross_entropy_matches_loops_and_hard_ce():
    t = _fixed()
    targets = torch.softmax(torch.randn(B, K), 1)
    assert soft_cross_entropy(t["l1"], targets).item() == pytest.approx(_ce(t["l1"], targets), rel=1e-6)
    onehot = F.one_hot(t["y"], K).float()
    hard = F.cross_entropy(t["l1"], t["y"]).item()
    assert soft_cross_entropy(t["l1"], onehot).item() == pytest.approx(hard, rel=1e-6)


def test_nt_xent_matches_a_loop_over_the_2B_rows():
    t = _fixed()
    tau = 0.25
    z = np.concatenate([t["z1"].numpy(), t["z2"].numpy()]).astype(np.float64)
    total = 0.0
    for i in range(2 * B):
        pos = i + B if i < B else i - B
        denom = sum(math.exp(z[i] @ z[j] / tau) for j in range(2 * B) if j != i)
        total += -math.log(math.exp(z[i] @ z[pos] / tau) / denom)
    assert nt_xent(t["z1"], t["z2"], tau).item() == pytest.approx(total / (2 * B), rel=1e-5)


def test_corrected_targets_swap_the_views():
    t = _fixed()
    p1, p2 = torch.softmax(t["l1"], 1), torch.softmax(t["l2"], 1)
    onehot = F.one_hot(t["y"], K).float()
    s1, s2 = 0.7, 0.4
    got = corrected_targets(onehot, p1, p2, t["w"], s1, s2)
    for i in range(B):
        a, c = float(t["w"][i]) * s1, float(t["w"][i]) * s2
        for k in range(K):
            y = 1.0 if k == int(t["y"][i]) else 0.0
            # strong1 is supervised by the OTHER view's prediction, and vice versa
            assert got.strong1[i, k].item() == pytest.approx((1 - a) * float(p2[i, k]) + a * y, abs=1e-6)
            assert got.strong2[i, k].item() == pytest.approx((1 - a) * float(p1[i, k]) + a * y, abs=1e-6)
            mean = (float(p1[i, k]) + float(p2[i, k])) / 2
            assert got.base[i, k].item() == pytest.approx((1 - c) * mean + c * y, abs=1e-6)
    # a fully clean sample (w = 1, scale 1) is supervised by its label alone
    full = corrected_targets(onehot, p1, p2, torch.ones(B), 1.0, 1.0)
    assert torch.allclose(full.strong1, onehot) and torch.allclose(full.base, onehot)


def test_mixup_targets_follow_the_image_permutation():
    targets = torch.softmax(torch.randn(6, K), 1)
    perm = torch.tensor([3, 0, 5, 1, 2, 4])
    lam = 0.8
    got = mixup_targets(targets, lam, perm)
    for i in range(6):
        for k in range(K):
            expect = lam * float(targets[i, k]) + (1 - lam) * float(targets[int(perm[i]), k])
            assert got[i, k].item() == pytest.approx(expect, abs=1e-7)


def test_entropy_terms_match_loops():
    logits = _fixed()["lm"]
    ent, ne = entropy_terms(logits)
    rows = [_softmax_row(list(map(float, r))) for r in logits]
    exp_ent = sum(-sum(p * math.log(p) for p in row) for row in rows) / len(rows)
    pbar = [sum(row[k] for row in rows) / len(rows) for k in range(K)]
    exp_ne = sum(p * math.log(p) for p in pbar)
    assert ent.item() == pytest.approx(exp_ent, rel=1e-6)
    assert ne.item() == pytest.approx(exp_ne, rel=1e-6)


def test_all_six_terms_of_one_step():
    t = _fixed()
    lam, perm = 0.7, torch.tensor([5, 2, 8, 0, 11, 1, 3, 9, 4, 10, 6, 7])
    onehot = F.one_hot(t["y"], K).float()
    p1, p2 = torch.softmax(t["l1"], 1), torch.softmax(t["l2"], 1)
    tg = corrected_targets(onehot, p1, p2, t["w"], 0.5, 0.5)
    mixed = mixup_targets(tg.base.repeat(3, 1), lam, perm)
    terms = tcl_terms(logits_s1=t["l1"], logits_s2=t["l2"], logits_mixed=t["lm"], proj_mixed=t["zm"],
                      proj_s1_all=t["z1"], proj_s2_all=t["z2"], t1=tg.strong1, t2=tg.strong2, mixed_targets=mixed,
                      prototypes=t["mu"], temperature=0.25, align_temperature=0.5)
    # hand computation: mixed targets row by row (sample i of the tiled base is i % B)
    base = tg.base.numpy().astype(np.float64)
    mixed_np = np.array([[lam * base[i % B, k] + (1 - lam) * base[int(perm[i]) % B, k] for k in range(K)]
                         for i in range(3 * B)])
    assert np.allclose(mixed.numpy(), mixed_np, atol=1e-6)
    cross = _ce(t["l1"], tg.strong1) + _ce(t["l2"], tg.strong2)
    assert terms.cross.item() == pytest.approx(cross, rel=1e-5)
    assert terms.mixed.item() == pytest.approx(_ce(t["lm"], mixed_np), rel=1e-5)
    zm, mu = t["zm"].numpy().astype(np.float64), t["mu"].numpy().astype(np.float64)
    align_logits = [[sum(zm[i, d] * mu[k, d] for d in range(D)) / 0.5 for k in range(K)] for i in range(3 * B)]
    assert terms.align.item() == pytest.approx(_ce(align_logits, mixed_np), rel=1e-5)
    ent, ne = entropy_terms(torch.cat([t["l1"], t["l2"], t["lm"]]))
    assert terms.entropy.item() == pytest.approx(ent.item()) and terms.balance.item() == pytest.approx(ne.item())
    assert terms.contrastive.item() == pytest.approx(nt_xent(t["z1"], t["z2"], 0.25).item())


def test_losses_are_float32_under_low_precision_inputs():
    t = _fixed()
    loss = soft_cross_entropy(t["l1"].bfloat16(), F.one_hot(t["y"], K).bfloat16())
    assert loss.dtype == torch.float32
    assert nt_xent(t["z1"].bfloat16(), t["z2"].bfloat16(), 0.25).dtype == torch.float32
