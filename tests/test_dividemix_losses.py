"""DivideMix's targets, loss terms and co-divide statistics against independent formulations.

The expected values are written from /work/shared/reference/dividemix.md's wording with plain loops and
numpy in float64; they never call the functions under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from tcl_lite.methods.dividemix.codivide import clean_probability, division, division_for, normalise_losses
from tcl_lite.methods.dividemix.losses import (
    co_guess,
    co_refine,
    confidence_penalty,
    dividemix_terms,
    draw_mix_lambda,
    lambda_u_at,
    mixmatch,
    sharpen,
)

B, K = 6, 5


def _softmax_row(z: list[float]) -> list[float]:
    m = max(z)
    e = [math.exp(v - m) for v in z]
    s = sum(e)
    return [v / s for v in e]


def _random_case(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits of the 4B mixed rows and soft targets (rows on the simplex), float64."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, size=(4 * B, K))
    raw = rng.random((4 * B, K)) + 1e-3
    return logits, raw / raw.sum(axis=1, keepdims=True)


def _expected_terms(logits: np.ndarray, targets: np.ndarray, n_labeled: int) -> tuple[float, float, float]:
    """Lx, Lu and the penalty written out with loops (dividemix.md, one training step)."""
    probs = [_softmax_row(list(row)) for row in logits]
    lx = 0.0
    for i in range(n_labeled):  # soft-target CE on the labeled rows
        lx -= sum(targets[i, c] * math.log(probs[i][c]) for c in range(K))
    lx /= n_labeled
    squares = [(probs[i][c] - targets[i, c]) ** 2 for i in range(n_labeled, len(probs)) for c in range(K)]
    lu = sum(squares) / len(squares)  # mean over all elements of the unlabeled rows
    pbar = [sum(p[c] for p in probs) / len(probs) for c in range(K)]  # mean softmax of ALL rows
    penalty = sum((1 / K) * math.log((1 / K) / pbar[c]) for c in range(K))
    return lx, lu, penalty


# ---------------------------------------------------------------------------------------------
# The loss terms


def test_loss_terms_match_an_independent_float64_formulation() -> None:
    logits, targets = _random_case()
    lx, lu, penalty = dividemix_terms(torch.from_numpy(logits), torch.from_numpy(targets), 2 * B, K)
    ex_lx, ex_lu, ex_penalty = _expected_terms(logits, targets, 2 * B)
    assert lx.dtype == torch.float64
    assert float(lx) == pytest.approx(ex_lx, rel=1e-6)
    assert float(lu) == pytest.approx(ex_lu, rel=1e-6)
    assert float(penalty) == pytest.approx(ex_penalty, rel=1e-6)
    assert ex_penalty > 0 and ex_lu > 0  # a case where every term is exercised
    lam = lambda_u_at(14.0, 10, 25.0)  # 6.25
    total = lx + lam * lu + penalty
    assert float(total) == pytest.approx(ex_lx + 6.25 * ex_lu + ex_penalty, rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_loss_terms_compute_in_float32_at_least(dtype: torch.dtype) -> None:
    logits, targets = _random_case(seed=1)
    low = torch.from_numpy(logits).to(dtype)
    terms = dividemix_terms(low, torch.from_numpy(targets).to(dtype), 2 * B, K)
    # the expectation on the same rounded inputs, so only the computation's precision is compared
    expected = _expected_terms(low.double().numpy(), torch.from_numpy(targets).to(dtype).double().numpy(), 2 * B)
    for got, want in zip(terms, expected, strict=True):
        assert got.dtype == torch.float32
        assert float(got) == pytest.approx(want, rel=1e-5)


def test_uniform_mean_prediction_has_no_penalty() -> None:
    # Each class predicted equally often on average: pbar = pi, so KL(pi || pbar) = 0.
    logits = torch.tensor([[3.0, 0.0], [0.0, 3.0], [1.0, -1.0], [-1.0, 1.0]])
    targets = torch.softmax(logits, dim=1)
    terms = dividemix_terms(logits, targets, 2, 2)
    assert float(terms.penalty) == pytest.approx(0.0, abs=1e-7)
    assert float(terms.lu) == pytest.approx(0.0, abs=1e-12)  # softmax equals its target


# ---------------------------------------------------------------------------------------------
# Sharpening, co-guessing, co-refinement


def test_sharpen_hand_case() -> None:
    p = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]], dtype=torch.float64)
    expected = torch.tensor([[0.04, 0.09, 0.25], [0.36, 0.04, 0.04]], dtype=torch.float64)
    expected /= expected.sum(dim=1, keepdim=True)
    torch.testing.assert_close(sharpen(p, 0.5), expected, rtol=1e-12, atol=0)
    # T = 1 leaves a distribution as it is
    torch.testing.assert_close(sharpen(p, 1.0), p, rtol=1e-12, atol=0)


def test_co_guess_is_the_sharpened_mean_of_four_softmaxes() -> None:
    rng = np.random.default_rng(2)
    logits = [rng.normal(size=(B, K)) for _ in range(4)]
    mean = np.zeros((B, K))
    for z in logits:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        mean += e / e.sum(axis=1, keepdims=True) / 4
    expected = mean ** 2 / (mean ** 2).sum(axis=1, keepdims=True)  # T = 0.5
    got = co_guess([torch.from_numpy(z) for z in logits], 0.5)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)


def test_co_refine_hand_cases() -> None:
    rng = np.random.default_rng(3)
    z1, z2 = rng.normal(size=(B, K)), rng.normal(size=(B, K))
    labels = rng.integers(0, K, size=B)
    onehot = np.eye(K)[labels]
    p1 = np.exp(z1) / np.exp(z1).sum(axis=1, keepdims=True)
    p2 = np.exp(z2) / np.exp(z2).sum(axis=1, keepdims=True)
    mean = (p1 + p2) / 2
    args = (torch.from_numpy(z1), torch.from_numpy(z2), torch.from_numpy(onehot))

    # w = 1: the sharpened one-hot is the one-hot itself
    np.testing.assert_array_equal(co_refine(*args, torch.ones(B, dtype=torch.float64), 0.5).numpy(), onehot)
    # w = 0: the sharpened mean prediction
    sharpened = mean ** 2 / (mean ** 2).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(co_refine(*args, torch.zeros(B, dtype=torch.float64), 0.5).numpy(), sharpened,
                               rtol=1e-10)
    # any w, as [B] or [B, 1]: px = w y + (1 - w) mean, then sharpened
    w = rng.random(B)
    px = w[:, None] * onehot + (1 - w[:, None]) * mean
    expected = px ** 2 / (px ** 2).sum(axis=1, keepdims=True)
    for shape in ((B,), (B, 1)):
        got = co_refine(*args, torch.from_numpy(w).reshape(shape), 0.5)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# MixMatch


def test_mix_lambda_is_the_larger_side_of_beta_4_4() -> None:
    torch.manual_seed(0)
    draws = np.array([draw_mix_lambda(4.0) for _ in range(3000)])
    assert draws.min() >= 0.5 and draws.max() <= 1.0
    # E[max(l, 1 - l)] under Beta(4, 4) (about 0.63; Beta(1, 1) would give 0.75)
    expected_mean, _ = integrate.quad(lambda x: max(x, 1 - x) * stats.beta.pdf(x, 4, 4), 0, 1, points=[0.5])
    assert abs(draws.mean() - expected_mean) < 0.01
    # torch's generator: the same seed draws the same lambda (what a resumed run relies on)
    torch.manual_seed(7)
    first = draw_mix_lambda(4.0)
    torch.manual_seed(7)
    assert draw_mix_lambda(4.0) == first


def test_mixmatch_mixes_inputs_and_targets_with_one_permutation() -> None:
    torch.manual_seed(1)
    inputs = torch.randn(4 * B, 3, 4, 4, dtype=torch.float64)
    targets = torch.softmax(torch.randn(4 * B, K, dtype=torch.float64), dim=1)
    for _ in range(50):
        lam = draw_mix_lambda(4.0)
        perm = torch.randperm(4 * B)
        mixed = mixmatch(inputs, targets, lam, perm)
        assert lam >= 0.5
        torch.testing.assert_close(mixed.targets.sum(dim=1), torch.ones(4 * B, dtype=torch.float64))
        for i in (0, 5, 4 * B - 1):
            j = int(perm[i])
            torch.testing.assert_close(mixed.inputs[i], lam * inputs[i] + (1 - lam) * inputs[j])
            torch.testing.assert_close(mixed.targets[i], lam * targets[i] + (1 - lam) * targets[j])


# ---------------------------------------------------------------------------------------------
# lambda_u ramp and the warm-up's confidence penalty


@pytest.mark.parametrize("epoch,expected", [(0.0, 0.0), (9.5, 0.0), (10.0, 0.0), (14.0, 6.25), (18.0, 12.5),
                                            (26.0, 25.0), (40.0, 25.0)])
def test_lambda_u_ramp(epoch: float, expected: float) -> None:
    assert lambda_u_at(epoch, 10, 25.0) == pytest.approx(expected, abs=1e-12)


def test_lambda_u_ramp_by_fractional_epoch() -> None:
    # epoch 10, batch 3 of 12: current = 10.25 -> 25 * 0.25 / 16
    assert lambda_u_at(10 + 3 / 12, 10, 25.0) == pytest.approx(25.0 * 0.25 / 16)
    assert lambda_u_at(31.0, 30, 150.0, rampup_epochs=4) == pytest.approx(37.5)


def test_confidence_penalty_is_the_negative_entropy() -> None:
    logits = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)]])  # p = (1/2, 1/2) and (1/4, 3/4)
    entropies = [math.log(2.0), -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))]
    assert float(confidence_penalty(logits)) == pytest.approx(-sum(entropies) / 2, rel=1e-6)
    # a saturated prediction has zero entropy (the reference's softmax(...).log() gives nan here)
    assert float(confidence_penalty(torch.tensor([[200.0, -200.0]]))) == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# Co-divide


def test_division_for_uses_the_other_networks_probabilities() -> None:
    p1 = np.array([0.9, 0.2, 0.7, 0.4, 0.51, 0.5], dtype=np.float32)
    p2 = np.array([0.1, 0.8, 0.6, 0.3, 0.49, 0.95], dtype=np.float32)
    for probs, net1, net2 in (([p1, p2], 0, 1), ({"net1": p1, "net2": p2}, "net1", "net2")):
        labeled, w, unlabeled = division_for(net1, probs, 0.5)  # net1 trains on net2's division
        np.testing.assert_array_equal(labeled, [i for i in range(6) if p2[i] > 0.5])
        np.testing.assert_array_equal(w, p2[labeled])
        np.testing.assert_array_equal(unlabeled, [0, 3, 4])
        labeled, w, unlabeled = division_for(net2, probs, 0.5)
        np.testing.assert_array_equal(labeled, [0, 2, 4])  # 0.5 itself is not > 0.5
        np.testing.assert_array_equal(w, p1[[0, 2, 4]])
        np.testing.assert_array_equal(unlabeled, [1, 3, 5])
    assert division(p1, 0.5).labeled_w.dtype == np.float32


def test_normalise_losses() -> None:
    x = normalise_losses(np.array([2.0, 4.0, 3.0, 6.0]))
    np.testing.assert_allclose(x, [0.0, 0.5, 0.25, 1.0])
    assert x.dtype == np.float32
    np.testing.assert_array_equal(normalise_losses(np.full(5, 1.3)), np.zeros(5))


def _two_clusters(seed: int) -> tuple[np.ndarray, int]:
    rng = np.random.default_rng(seed)
    low, high = rng.normal(0.3, 0.05, 300), rng.normal(2.5, 0.3, 200)
    return normalise_losses(np.concatenate([low, high])), 300


def test_clean_probability_separates_two_clusters_and_is_seeded() -> None:
    losses, n_low = _two_clusters(0)
    w = clean_probability(losses, seed=0)
    assert w.dtype == np.float64 and w.shape == losses.shape  # the reference's float64 posterior (gmm_dtype)
    assert clean_probability(losses, seed=0, dtype="float32").dtype == np.float32  # the named former behaviour
    assert w[:n_low].min() > 0.9 and w[n_low:].max() < 0.1
    np.testing.assert_array_equal(clean_probability(losses, seed=0), w)
    # the arguments are the reference's GMM settings by default, and are passed on
    np.testing.assert_array_equal(clean_probability(losses, seed=0, max_iter=10, tol=1e-2, reg_covar=5e-4), w)


def test_clean_probability_averages_the_history_rows() -> None:
    # Five epochs (the reference at 90% noise): 20 low-loss samples look noisy in the newest epoch only.
    older, _ = _two_clusters(1)
    newer = older.copy()
    newer[:20] = 0.95
    history = np.stack([older] * 4 + [newer])
    mean = history.astype(np.float64).mean(axis=0).astype(np.float32)
    from_history = clean_probability(history, seed=0)
    np.testing.assert_allclose(from_history, clean_probability(mean, seed=0), rtol=1e-5, atol=1e-6)
    assert from_history[:20].min() > 0.9  # the mean still puts them with the clean samples ...
    assert clean_probability(newer, seed=0)[:20].max() < 0.1  # ... the newest row alone would not
