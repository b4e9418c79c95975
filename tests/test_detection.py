"""Noise detection on synthetic separable features with planted wrong labels, its pieces, and kNN."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from tcl_lite.algorithms.gmm_detector import (
    CentreStats,
    detect,
    detection_metrics,
    detection_pass,
    gmm_clean_probability,
    label_posterior,
    minmax,
)
from tcl_lite.algorithms.knn import knn_predict
from tcl_lite.models.network import NetworkOutput

N, K, D, FLIP = 1000, 10, 32, 0.3


def _planted(seed=0, spread=0.35):
    """10 well-separated clusters on the sphere; 30% of the labels moved to another class."""
    g = torch.Generator().manual_seed(seed)
    means = F.normalize(torch.randn(K, D, generator=g), dim=1)
    true = torch.arange(N) % K
    v = F.normalize(means[true] + spread * torch.randn(N, D, generator=g) / D ** 0.5, dim=1)
    noisy = true.clone()
    flipped = torch.randperm(N, generator=g)[: int(FLIP * N)]
    noisy[flipped] = (true[flipped] + torch.randint(1, K, (len(flipped),), generator=g)) % K
    # predictions of a network that has fitted the noisy labels (the hard case for the centres)
    p = F.one_hot(noisy, K).float() * 0.8 + 0.2 / K
    return v, p, noisy, true


@pytest.mark.parametrize("sigma,per_class", [("shared", False), ("shared", True), ("per_cluster", False),
                                             ("per_cluster", True)])
def test_planted_wrong_labels_are_found(sigma, per_class):
    v, p, noisy, true = _planted()
    det = detect(v, p, noisy, temperature=0.25, sigma=sigma, per_class=per_class)
    clean = (noisy == true).numpy()
    w = det.clean_probability.numpy()
    assert roc_auc_score(clean, w) > 0.99
    assert w[clean].mean() > 0.9 and w[~clean].mean() < 0.1, (w[clean].mean(), w[~clean].mean())
    assert det.clean_fraction == pytest.approx(clean.mean(), abs=0.03)
    # prototypes point at the true cluster means despite the noise
    means = F.normalize(torch.stack([v[true == k].mean(0) for k in range(K)]), dim=1)
    assert (det.prototypes * means).sum(1).min() > 0.9


def test_centres_stream_in_chunks_and_sigma_matches_its_definition():
    v, p, noisy, _ = _planted(1)
    stats = CentreStats(K, D)
    for pc, vc in zip(p.split(77), v.split(77)):
        stats.update(pc, vc)
    mu = F.normalize(p.T @ v, dim=1)
    assert torch.allclose(stats.centres(), mu, atol=1e-5)
    # Eq. 4 as a scalar spread: sum_i p_ik ||v_i - mu_k||^2 / sum_i p_ik, by explicit loop
    for k in range(K):
        d2 = ((v - mu[k]) ** 2).sum(1)
        assert stats.sigmas()[k].item() == pytest.approx(float((p[:, k] * d2).sum() / p[:, k].sum()), rel=1e-4)


def test_label_posterior_forms():
    v, p, noisy, _ = _planted(2)
    mu = F.normalize(p.T @ v, dim=1)
    i, y = 7, noisy[7]
    shared = label_posterior(v[i:i + 1], y.view(1), mu, temperature=0.25).item()
    expect = torch.softmax(v[i] @ mu.T / 0.25, 0)[y].item()
    assert shared == pytest.approx(expect, rel=1e-5)
    # per cluster: Eq. 5 from squared distances, not the dot-product shortcut
    sig = torch.linspace(0.2, 0.8, K)
    per = label_posterior(v[i:i + 1], y.view(1), mu, sigmas=sig).item()
    logit = torch.stack([-((v[i] - mu[k]) ** 2).sum() / (2 * sig[k]) for k in range(K)])
    assert per == pytest.approx(torch.softmax(logit, 0)[y].item(), rel=1e-4)


def test_gmm_takes_the_lower_mean_component_and_handles_degenerate_input():
    rng = np.random.default_rng(0)
    scores = minmax(np.concatenate([rng.normal(0.1, 0.03, 300), rng.normal(0.9, 0.03, 100)]))
    w = gmm_clean_probability(scores)
    assert w[:300].min() > 0.99 and w[300:].max() < 0.01
    assert np.all(gmm_clean_probability(np.zeros(10)) == 1.0)  # nothing to separate: trust the labels


def test_detection_metrics():
    w = torch.tensor([0.9, 0.4, 0.2, 0.6])
    preds = torch.tensor([0, 1, 1, 0])
    noisy, true = np.array([0, 1, 0, 1]), np.array([0, 1, 1, 1])
    m = detection_metrics(w, preds, noisy, true)
    assert m["est_clean_fraction"] == 0.5
    assert m["label_correction_acc"] == 0.75
    assert m["detection_acc"] == 0.75  # clean = [1, 1, 0, 1]; sample 1 is clean but has w 0.4
    assert m["detection_auc"] == roc_auc_score([1, 1, 0, 1], w.numpy())
    assert set(detection_metrics(w, preds, noisy, None)) == {"est_clean_fraction"}


def test_knn_streams_over_the_bank_like_a_brute_force_vote():
    g = torch.Generator().manual_seed(0)
    bank = F.normalize(torch.randn(300, 8, generator=g), dim=1)
    labels = torch.randint(0, 4, (300,), generator=g)
    q = F.normalize(torch.randn(50, 8, generator=g), dim=1)
    got = knn_predict(q, bank, labels, 4, k=20, t=0.1, query_chunk=16, bank_chunk=64)
    sim = q @ bank.T
    top, idx = sim.topk(20, dim=1)
    scores = torch.zeros(50, 4).scatter_add_(1, labels[idx], (top / 0.1).exp())
    assert torch.equal(got, scores.argmax(1))


class _FeatureModel(torch.nn.Module):
    """'Images' are the features themselves: the projection is the input, the logits come from p."""

    def forward(self, x):
        feats = x[:, :D]
        return NetworkOutput(x[:, D:].log(), feats, feats)


def test_streamed_pass_matches_in_memory_detection(fresh_accelerate):
    from accelerate import Accelerator

    v, p, noisy, _ = _planted(3)
    acc = Accelerator(cpu=True)
    x = torch.cat([v, p], dim=1)
    rows = [{"index": i, "image": x[i], "label": int(noisy[i])} for i in range(N)]
    loader = acc.prepare_data_loader(torch.utils.data.DataLoader(rows, batch_size=128))
    streamed = detection_pass(acc, _FeatureModel(), loader, noisy, K)
    direct = detect(v, p, noisy)
    assert torch.allclose(streamed.prototypes, direct.prototypes, atol=1e-5)
    assert torch.allclose(streamed.clean_probability, direct.clean_probability, atol=1e-4)
    assert torch.equal(streamed.predictions, noisy)  # argmax of p
    assert streamed.features.device.type == "cpu" and streamed.features.shape == (N, D)
