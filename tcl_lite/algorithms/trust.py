"""How far a run's per-sample verdicts can be believed, judged without true labels.

A noisy-label method hands back, per training sample, a probability that the given label is wrong and
the label it would use instead. Whether those are right depends on the data: the same command fixes most
wrong labels on one data set and, on another, replaces right labels by its own wrong predictions (a weak
representation makes them its targets). So after each noise detection and at the end of training the run
checks its verdicts against what else it has (``diagnose``):

* **noise estimate**: the method's estimated noise rate, its spread over the last detections, and the
  fraction of labels it would change, which should be about the same number;
* **representation**: the leave-one-out kNN accuracy of the features against the given labels (a good
  representation's neighbours vote for the true class, so its complement is a second, rough estimate of
  the noise) and the agreement of the kNN vote with the classifier;
* **a second opinion**: the agreement (Cohen's kappa) of two noisy/clean verdicts the run has
  independently (TCL: its mixture model vs the classifier's self-confidence; DivideMix: its two networks;
  CE and MLNT: the classifier vs the kNN vote);
* **neighbour support**: for each proposed change, whether the given labels of the sample's nearest
  neighbours favour the suggested label over the given one.

``judge`` turns them, and whether the run left its warm-up, into ``trustworthy`` / ``doubtful`` /
``not usable`` with the reasons in words. ``change_confidence`` gives every proposed change a confidence;
in a ``trustworthy`` run the changes at or above ``APPLY_THRESHOLD`` are the ones to apply. Every threshold
here was chosen on runs with known true labels: BENCHMARKS.md, section 11 "Trust verdicts"
(``bench/trust_validation.py``).

Pure computation: numpy and torch, no file, no model, no engine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

LEVELS = ("trustworthy", "doubtful", "not usable")
TRUSTWORTHY, DOUBTFUL, NOT_USABLE = LEVELS

# -- the thresholds (origin: BENCHMARKS.md, "Trust verdicts") ----------------------------------------
#: a proposed change whose confidence reaches this is applied (in a trustworthy run)
APPLY_THRESHOLD = 0.5
#: the noise estimate may move this much (max - min) over the last STABILITY_WINDOW detections
MAX_NOISE_SPREAD = 0.10
STABILITY_WINDOW = 3
#: the fraction of labels the method would change may differ from its noise estimate by this much, or by
#: more as long as that is at most MAX_CHANGE_RATIO of the larger of the two (high noise is estimated less well)
MAX_CHANGE_GAP = 0.10
MAX_CHANGE_RATIO = 1 / 3
#: the noise estimate may exceed the kNN's disagreement with the given labels by this much
MAX_EXCESS_OVER_KNN = 0.20
#: the kNN vote and the classifier must agree on at least this fraction of the samples
MIN_KNN_AGREEMENT = 0.50
#: Cohen's kappa of the two independent noisy/clean verdicts
MIN_KAPPA = 0.20
#: fraction of the proposed changes the neighbours' labels must back (below HARMFUL: not usable)
MIN_CHANGE_SUPPORT = 0.60
HARMFUL_CHANGE_SUPPORT = 0.50
#: the share of the proposed changes whose confidence reaches APPLY_THRESHOLD (below: the method is unsure of
#: most of its own corrections, as where its representation is too weak to classify)
MIN_CONFIDENT_SHARE = 0.35
#: changes counted before neighbour support or the confident share decide anything (fewer: too few to judge)
MIN_CHANGES_JUDGED = 20

# -- kNN -------------------------------------------------------------------------------------------
KNN_T = 0.1  # the vote weight exp(similarity / t), as TCL's kNN monitor
KNN_MAX_SAMPLE = 5000  # random samples for the kNN accuracy and agreement
KNN_MAX_CHANGES = 20000  # proposed changes (most suspect first) given a neighbour vote


@dataclass
class TrustSignals:
    """What a method exposes after a detection; per training sample, in dataset order, on the CPU."""

    given: np.ndarray  # [N] int64, the labels training used
    noisy_probability: np.ndarray  # [N] the method's probability that the given label is wrong (its ranking score)
    suggested: np.ndarray  # [N] int64, the label the method would use instead
    probabilities: np.ndarray  # [N, K] the classifier's softmax
    features: Tensor | None = None  # [N, d] the representation for the kNN checks (None: skipped)
    estimated_noise: float | None = None  # the method's own estimate; None: mean(noisy_probability > 0.5)
    #: two named, independently obtained probabilities that the given label is wrong; empty: the method's
    #: verdict is compared with the kNN vote
    opinions: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = "detection"  # or "diagnostic pass"


@dataclass
class SampleTrust:
    """Per training sample: the suggestion and how much to believe it."""

    suggested: np.ndarray  # int64
    noisy_probability: np.ndarray  # float32
    classifier_support: np.ndarray  # float32, the classifier's probability of the suggested label
    knn_preference: np.ndarray  # float32, v(s) / (v(s) + v(given)) of the neighbour vote; NaN: not computed
    confidence: np.ndarray  # float32, of a proposed change; 0 where the suggestion is the given label

    def arrays(self) -> dict[str, np.ndarray]:
        return asdict(self)


@dataclass
class Verdict:
    """``level`` (one of LEVELS), ``reasons``: what keeps it from trustworthy, ``evidence``: the figures."""

    level: str
    reasons: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)

    def headline(self) -> str:
        """One line: the level and why."""
        why = self.reasons if self.reasons else self.evidence[:3]
        return f"{self.level}" + (f": {'; '.join(why)}" if why else "")

    def markdown(self) -> list[str]:
        """The verdict as a Markdown section (report.md's first)."""
        what = {TRUSTWORTHY: "the changes marked `applied` can be used",
                DOUBTFUL: "review the ranked list; no relabelled file is written by default",
                NOT_USABLE: "its corrections must not be used"}[self.level]
        return ([f"## Trust verdict: **{self.level}** ({what})", ""] + [f"- {r}" for r in self.reasons]
                + [f"- {e}" for e in self.evidence] + [""])

    def lines(self) -> list[str]:
        """The verdict as text lines for a log or the console."""
        head = {TRUSTWORTHY: "corrections can be applied",
                DOUBTFUL: "review the ranked list; no relabelled file by default",
                NOT_USABLE: "do not use its corrections"}[self.level]
        return ([f"trust verdict: {self.level.upper()} ({head})"] + [f"  - {r}" for r in self.reasons]
                + [f"  . {e}" for e in self.evidence])


# ---------------------------------------------------------------------------------------------------
# kNN over the run's own training set


def knn_k(n: int, num_classes: int) -> int:
    """Neighbours of the vote: about a fifth of a class's share of the data, between 5 and 50."""
    return int(np.clip(n // max(1, 5 * num_classes), 5, 50))


@torch.no_grad()
def neighbour_votes(features: Tensor, labels: np.ndarray, queries: np.ndarray, num_classes: int, k: int,
                    t: float = KNN_T, *, device: torch.device | str | None = None, query_chunk: int = 1024,
                    bank_chunk: int = 16384) -> np.ndarray:
    """[Q, K] vote shares of the ``k`` most cosine-similar OTHER training samples' ``labels`` for each
    sample index in ``queries``, each neighbour weighted ``exp(similarity / t)`` (leave-one-out).

    Streams as ``algorithms/knn.py``: the device holds ``query_chunk x (k + bank_chunk)`` similarities."""
    device = torch.device(device) if device is not None else features.device
    n = features.shape[0]
    k = max(1, min(k, n - 1))
    lab = torch.as_tensor(labels, dtype=torch.long, device=device)
    out = []
    for start in range(0, len(queries), query_chunk):
        qi = torch.as_tensor(queries[start:start + query_chunk], dtype=torch.long)
        q = F.normalize(features[qi].to(device, torch.float32), dim=1)
        qi = qi.to(device)
        top_sim = torch.empty(len(qi), 0, device=device)
        top_idx = torch.empty(len(qi), 0, dtype=torch.long, device=device)
        for b in range(0, n, bank_chunk):
            bank = F.normalize(features[b:b + bank_chunk].to(device, torch.float32), dim=1)
            ids = torch.arange(b, b + bank.shape[0], device=device)
            sim = q @ bank.T
            sim = sim.masked_fill(ids[None, :] == qi[:, None], float("-inf"))  # never one's own label
            sim, idx = torch.cat([top_sim, sim], 1), torch.cat([top_idx, ids.expand(len(qi), -1)], 1)
            top_sim, pos = sim.topk(min(k, sim.shape[1]), dim=1)
            top_idx = idx.gather(1, pos)
        weights = ((top_sim - 1) / t).exp()  # shifted by the largest possible similarity: no overflow
        votes = (F.one_hot(lab[top_idx], num_classes).float() * weights.unsqueeze(-1)).sum(1)
        out.append((votes / votes.sum(1, keepdim=True).clamp_min(1e-30)).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, num_classes), dtype=np.float32)


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Agreement of two boolean verdicts beyond chance (1: identical, 0: as by chance); NaN if undefined."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if len(a) == 0:
        return float("nan")
    observed = float((a == b).mean())
    pa, pb = float(a.mean()), float(b.mean())
    chance = pa * pb + (1 - pa) * (1 - pb)
    return float("nan") if chance >= 1.0 else (observed - chance) / (1.0 - chance)


# ---------------------------------------------------------------------------------------------------
# Diagnostics


def change_confidence(noisy_probability: np.ndarray, classifier_support: np.ndarray, knn_preference: np.ndarray,
                      changed: np.ndarray) -> np.ndarray:
    """Confidence of each proposed change: the weakest of three signals that all have to agree, the
    method's probability that the given label is wrong, the classifier's probability of the suggested
    label and the neighbours' preference for it over the given label. 0 where nothing is proposed or
    the neighbour vote was not computed."""
    conf = np.minimum(np.minimum(noisy_probability, classifier_support), np.nan_to_num(knn_preference, nan=0.0))
    return np.where(changed, conf, 0.0).astype(np.float32)


def _knn_queries(signals: TrustSignals, changed: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(random sample for the accuracy checks, every sample to query: the sample and the proposed changes)."""
    n = len(signals.given)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, min(n, KNN_MAX_SAMPLE), replace=False))
    changes = np.flatnonzero(changed)
    if len(changes) > KNN_MAX_CHANGES:  # the most suspect first: those are the ones a user would apply
        changes = changes[np.argsort(-signals.noisy_probability[changes], kind="stable")[:KNN_MAX_CHANGES]]
    return sample, np.union1d(sample, changes)


def diagnose(signals: TrustSignals, *, history: Sequence[float] = (), seed: int = 0,
             device: torch.device | str | None = None) -> tuple[dict[str, float], SampleTrust]:
    """The run's diagnostics (a flat dict of floats, NaN where a check does not apply) and the
    per-sample trust. ``history``: the noise estimates of the earlier detections after the warm-up."""
    given, suggested = np.asarray(signals.given), np.asarray(signals.suggested)
    probs = np.asarray(signals.probabilities, dtype=np.float32)
    n, num_classes = probs.shape
    noisy_p = np.asarray(signals.noisy_probability, dtype=np.float32)
    changed = suggested != given
    est = float(np.mean(noisy_p > 0.5)) if signals.estimated_noise is None else float(signals.estimated_noise)
    window = [*history, est][-STABILITY_WINDOW:]
    diag = {"est_noise": est, "est_noise_spread": float(max(window) - min(window)) if len(window) > 1 else math.nan,
            "detections": float(len(window)), "change_fraction": float(changed.mean()), "num_samples": float(n),
            "knn_acc": math.nan, "knn_agreement": math.nan, "kappa": math.nan, "change_support": math.nan,
            "changes_judged": 0.0}
    support = probs[np.arange(n), suggested]
    preference = np.full(n, np.nan, dtype=np.float32)
    knn_flags = None
    if signals.features is not None and n > 1:
        sample, queries = _knn_queries(signals, changed, seed)
        votes = neighbour_votes(signals.features, given, queries, num_classes, knn_k(n, num_classes), device=device)
        rows = np.searchsorted(queries, sample)
        vote = votes[rows].argmax(1)
        diag["knn_acc"] = float((vote == given[sample]).mean())
        diag["knn_agreement"] = float((vote == probs[sample].argmax(1)).mean())
        knn_flags = (sample, vote != given[sample])
        vs, vy = votes[np.arange(len(queries)), suggested[queries]], votes[np.arange(len(queries)), given[queries]]
        preference[queries] = np.where(vs + vy > 0, vs / np.maximum(vs + vy, 1e-30), 0.5)
        judged = changed & ~np.isnan(preference)
        diag["changes_judged"] = float(judged.sum())
        if judged.any():
            diag["change_support"] = float((preference[judged] > 0.5).mean())
    diag["kappa"] = _kappa(signals, noisy_p, knn_flags)
    confidence = change_confidence(noisy_p, support, preference, changed)
    confident = confidence >= APPLY_THRESHOLD
    diag["confident_fraction"] = float(confident.mean())
    diag["confident_share"] = float(confident[changed].mean()) if changed.any() else math.nan
    return diag, SampleTrust(suggested.astype(np.int64), noisy_p, support.astype(np.float32), preference, confidence)


def _kappa(signals: TrustSignals, noisy_p: np.ndarray, knn_flags: tuple[np.ndarray, np.ndarray] | None) -> float:
    if len(signals.opinions) == 2:
        a, b = signals.opinions.values()
        return cohen_kappa(np.asarray(a) > 0.5, np.asarray(b) > 0.5)
    if knn_flags is not None:  # the method's verdict vs the neighbours' vote
        sample, flags = knn_flags
        return cohen_kappa(noisy_p[sample] > 0.5, flags)
    return math.nan


# ---------------------------------------------------------------------------------------------------
# The verdict


@dataclass
class RunState:
    """Where the run stands when it is judged."""

    method: str
    epochs_done: float  # completed epochs (fractional for a run stopped inside an epoch)
    total_epochs: int
    warmup_epochs: float = 0.0  # the method's warm-up on the given labels (0: none)
    warmup_setting: str = ""  # the config key that sets it
    per_epoch_detection: bool = False  # whether the method detects after every epoch (stability is judged)
    stopped: bool = False  # stopped by a time budget or a signal before the last epoch
    #: where the diagnosed signals came from, when not the method's own detection (evidence's first line)
    signals: str = ""

    @property
    def in_warmup(self) -> bool:
        return self.warmup_epochs > 0 and self.epochs_done <= self.warmup_epochs


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def judge(diag: dict[str, float] | None, state: RunState) -> Verdict:
    """The verdict on a run's corrections from its diagnostics (``diagnose``) and where it stands."""
    v = Verdict(TRUSTWORTHY)
    if state.signals:
        v.evidence.append(state.signals)
    if state.stopped:
        v.evidence.append(f"the run stopped at epoch {state.epochs_done:g} of {state.total_epochs}; "
                          "the diagnostics are those of its last detection")
    if state.in_warmup:
        v.level = NOT_USABLE
        v.reasons.append(f"the run ended inside {state.method}'s warm-up (epoch {state.epochs_done:g} of "
                         f"{round(state.warmup_epochs, 2):g} warm-up epochs on the given labels"
                         + (f", {state.warmup_setting}" if state.warmup_setting else "")
                         + "): its corrections come from a classifier trained on the noisy labels and were never "
                         "used; train past the warm-up (train.epochs > the warm-up)")
        return v
    if diag is None:
        v.level = DOUBTFUL
        v.reasons.append("no diagnostics: the run stopped before its end-of-training check (resume it to finish)")
        return v
    _judge_noise_estimate(diag, state, v)
    _judge_representation(diag, v)
    _judge_changes(diag, v)
    return v


def _flag(v: Verdict, level: str, reason: str) -> None:
    if LEVELS.index(level) > LEVELS.index(v.level):
        v.level = level
    v.reasons.append(reason)


def _judge_noise_estimate(d: dict[str, float], state: RunState, v: Verdict) -> None:
    est, spread, change = d["est_noise"], d["est_noise_spread"], d["change_fraction"]
    v.evidence.append(f"estimated noise {_pct(est)}, labels it would change {_pct(change)}")
    if state.per_epoch_detection:
        if math.isnan(spread):
            _flag(v, DOUBTFUL, "only one detection after the warm-up: whether the noise estimate has settled "
                  "cannot be judged yet (train longer)")
        elif spread > MAX_NOISE_SPREAD:
            _flag(v, DOUBTFUL, f"the noise estimate is unstable: it moved by {_pct(spread)} over the last "
                  f"{int(d['detections'])} detections")
        else:
            v.evidence.append(f"noise estimate stable within {_pct(spread)} over the last "
                              f"{int(d['detections'])} detections")
    gap = abs(change - est)
    if gap > MAX_CHANGE_GAP and gap > MAX_CHANGE_RATIO * max(change, est):
        _flag(v, DOUBTFUL, f"the noise estimate contradicts the verdicts: it estimates {_pct(est)} of the labels "
              f"noisy but would change {_pct(change)}")


def _judge_representation(d: dict[str, float], v: Verdict) -> None:
    knn, agree, kappa = d["knn_acc"], d["knn_agreement"], d["kappa"]
    if not math.isnan(knn):
        v.evidence.append(f"kNN accuracy against the given labels {_pct(knn)}, kNN-classifier agreement "
                          f"{_pct(agree)}")
        if d["est_noise"] > (1 - knn) + MAX_EXCESS_OVER_KNN:
            _flag(v, DOUBTFUL, f"the method estimates {_pct(d['est_noise'])} noise where the nearest neighbours "
                  f"disagree with only {_pct(1 - knn)} of the given labels: it over-estimates the noise")
        if agree < MIN_KNN_AGREEMENT:
            _flag(v, DOUBTFUL, f"the representation and the classifier disagree on {_pct(1 - agree)} of the "
                  "samples: the representation is too weak to back the classifier's suggestions")
    if not math.isnan(kappa):
        if kappa < MIN_KAPPA:
            _flag(v, DOUBTFUL, f"two independent noise verdicts of the run barely agree (kappa {kappa:.2f})")
        else:
            v.evidence.append(f"independent noise verdicts agree (kappa {kappa:.2f})")


def _judge_changes(d: dict[str, float], v: Verdict) -> None:
    support, judged, share = d["change_support"], int(d["changes_judged"]), d.get("confident_share", math.nan)
    if math.isnan(support) or judged < MIN_CHANGES_JUDGED:
        return
    if share < MIN_CONFIDENT_SHARE:
        _flag(v, DOUBTFUL, f"only {_pct(share)} of the {judged} proposed changes reach the confidence threshold: the "
              "method is unsure of most of its own corrections")
    if support < HARMFUL_CHANGE_SUPPORT:
        _flag(v, NOT_USABLE, f"the nearest neighbours' labels back only {_pct(support)} of the {judged} proposed "
              "changes: applying them would likely make the labels worse")
    elif support < MIN_CHANGE_SUPPORT:
        _flag(v, DOUBTFUL, f"the nearest neighbours' labels back only {_pct(support)} of the {judged} proposed "
              "changes")
    else:
        v.evidence.append(f"the nearest neighbours' labels back {_pct(support)} of the {judged} proposed changes")


def applied(confidence: np.ndarray, level: str, threshold: float = APPLY_THRESHOLD) -> np.ndarray:
    """Which proposed changes to apply: confidence at or above ``threshold``, in a trustworthy run only."""
    confidence = np.asarray(confidence)
    return (confidence >= threshold) & (confidence > 0) & (level == TRUSTWORTHY)


def verdict_from_dict(d: dict[str, Any]) -> Verdict:
    return Verdict(str(d.get("verdict", DOUBTFUL)), list(d.get("reasons", [])), list(d.get("evidence", [])))
