"""Trust verdicts (``algorithms/trust.py``): a run inside its warm-up is not usable and gets no relabelled
file; a detection whose noise estimate contradicts its verdicts is doubtful, saying so; a full TCL run on the
digits at 40% symmetric noise is trustworthy and the changes it applies are right far more often than the
labels they replace (true labels known); the CSVs' confidence and applied columns follow the threshold."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from conftest import TINY

import tcl_lite
from tcl_lite.algorithms import trust
from tcl_lite.algorithms.trust_files import load_trust
from tcl_lite.checkpoints import schema
from tcl_lite.results.report import CLEANED_COLUMNS, make_report
from tcl_lite.runlog.run_status import read_status

# ---------------------------------------------------------------------------------------------------
# constructed detection states


def _signals(n: int = 600, k: int = 4, flip: float = 0.4, est_noise: float | None = None, wrong: bool = False,
             seed: int = 0) -> trust.TrustSignals:
    """Features clustered by true class; ``flip`` of the given labels moved to another class; the method
    suggests the true class with probability 0.9 (``wrong``: it keeps the wrong labels and moves as many right
    ones to another class instead)."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    features = torch.eye(k)[torch.as_tensor(true)] + 0.2 * torch.randn(n, k, generator=torch.Generator().manual_seed(0))
    given = true.copy()
    flipped = rng.random(n) < flip
    given[flipped] = (true[flipped] + rng.integers(1, k, int(flipped.sum()))) % k
    suggested = true
    if wrong:
        moved = ~flipped & (rng.random(n) < flip)
        suggested = np.where(flipped, given, np.where(moved, (true + 1) % k, true))
    probs = np.full((n, k), 0.1 / (k - 1))
    probs[np.arange(n), suggested] = 0.9
    noisy_p = np.where(suggested != given, 0.95, 0.05)
    if est_noise is not None:  # only the most suspect est_noise of the samples are called noisy
        noisy_p = np.where(np.argsort(np.argsort(-noisy_p, kind="stable")) < est_noise * n, 0.95, 0.3)
    return trust.TrustSignals(given, noisy_p, suggested, probs, features,
                              opinions={"method": noisy_p, "self-confidence": 1 - probs[np.arange(n), given]})


STATE = trust.RunState("tcl", 30, 30, 10, "tcl.warmup_epochs", per_epoch_detection=True)


def _judge(signals: trust.TrustSignals, history=(0.4, 0.41), state=STATE) -> tuple[trust.Verdict, dict]:
    diag, samples = trust.diagnose(signals, history=history)
    return trust.judge(diag, state), {**diag, "samples": samples}


def test_consistent_detection_is_trustworthy_and_its_confident_changes_are_the_right_ones():
    signals = _signals()
    verdict, d = _judge(signals)
    assert verdict.level == "trustworthy", verdict.reasons
    assert d["change_support"] == 1.0 and d["kappa"] > 0.9
    conf = d["samples"].confidence
    changed = signals.suggested != signals.given
    assert np.all(conf[~changed] == 0) and np.all(conf[changed] >= trust.APPLY_THRESHOLD)


def test_noise_estimate_contradicting_the_verdicts_is_doubtful_with_the_reason():
    # The method calls only 20% of the labels noisy but would change about 40% of them.
    signals = _signals(est_noise=0.2)
    verdict, d = _judge(signals, history=(0.2, 0.21))
    assert d["est_noise"] == pytest.approx(0.2, abs=0.01) and d["change_fraction"] > 0.35
    assert verdict.level == "doubtful"
    assert ("the noise estimate contradicts the verdicts: it estimates 20% of the labels noisy but would change "
            f"{100 * d['change_fraction']:.0f}%") in verdict.reasons


def test_changes_the_neighbours_reject_are_not_usable_and_an_unsettled_estimate_is_doubtful():
    verdict, _ = _judge(_signals(wrong=True))
    assert verdict.level == "not usable"
    assert any("back only 0% of the" in r and "make the labels worse" in r for r in verdict.reasons)
    verdict, _ = _judge(_signals(), history=(0.1, 0.3))
    assert verdict.level == "doubtful" and any("unstable" in r for r in verdict.reasons)
    verdict, _ = _judge(_signals(), history=())
    assert verdict.level == "doubtful" and any("only one detection" in r for r in verdict.reasons)


def test_inside_the_warmup_is_not_usable_whatever_the_figures():
    inside = trust.RunState("dividemix", 10, 30, 10, "dividemix.warmup_epochs", per_epoch_detection=True)
    verdict, _ = _judge(_signals(), state=inside)
    assert verdict.level == "not usable" and "inside dividemix's warm-up" in verdict.reasons[0]
    assert "dividemix.warmup_epochs" in verdict.reasons[0]
    assert not trust.applied(np.ones(3), verdict.level).any()


def test_status_schema_declares_the_verdict_levels():
    assert schema.TRUST_LEVELS == trust.LEVELS
    with pytest.raises(schema.Invalid, match="trust"):
        schema.STATUS.check({"state": "finished", "trust": {"verdict": "fine", "reasons": []}}, "status.json")


def test_leave_one_out_votes_never_count_the_sample_itself():
    features = torch.tensor([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99]])
    votes = trust.neighbour_votes(features, np.array([0, 1, 1, 1]), np.arange(4), 2, k=1)
    assert votes.argmax(1).tolist() == [1, 0, 1, 1]  # sample 0's nearest other is sample 1, and vice versa


# ---------------------------------------------------------------------------------------------------
# real runs


def _tiny_tcl(run, *overrides):
    from accelerate.state import AcceleratorState, GradientState

    from tcl_lite.config import load_config
    from tcl_lite.engine import train

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    train(load_config(None, [*TINY, "method=tcl", "tcl.warmup_epochs=2", *overrides, f"output_dir={run}"]))
    return run


def test_runs_inside_the_warmup_are_not_usable_and_write_no_relabelled_file(tmp_path, fresh_accelerate, capsys):
    # Finished inside the warm-up (1 epoch of 2): warned at start, judged not usable, no relabelled file.
    run = _tiny_tcl(tmp_path / "short", "train.epochs=1")
    out = capsys.readouterr().out
    assert "warning: train.epochs=1 does not exceed tcl's warm-up (tcl.warmup_epochs, 2 epochs" in out
    assert "trust verdict: NOT USABLE" in out and "warning: train.epochs=1" in (run / "train.log").read_text()
    assert read_status(run)["trust"]["verdict"] == "not usable"  # read through the schema, which declares it
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["trust_level"] == 2  # LEVELS' index
    record = load_trust(run)
    assert record.level == "not usable" and record.info["final"]
    assert record.verdict.reasons[0].startswith("the run ended inside tcl's warm-up (epoch 1 of 2")
    report = make_report(run, tmp_path / "report", write_cleaned=True)  # refused even when asked
    assert not (report / "cleaned_labels.csv").exists() and (report / "review_labels.csv").is_file()
    lines = (report / "report.md").read_text().splitlines()
    assert lines[2] == "## Trust verdict: **not usable** (its corrections must not be used)"
    issues = tcl_lite.find_label_issues(run)
    assert issues.verdict.level == "not usable" and issues.applied is not None and not issues.applied.any()

    # Stopped by its time budget during the first warm-up epoch: the same verdict, for the checkpoint it saved.
    run = _tiny_tcl(tmp_path / "stopped", "train.epochs=4", "train.time_budget=1")
    status, record = json.loads((run / "status.json").read_text()), load_trust(run)
    assert status["state"] == "stopped_time_budget" and status["trust"]["verdict"] == "not usable"
    assert record.level == "not usable" and record.info["stopped"]
    assert "inside tcl's warm-up" in record.verdict.reasons[0]
    assert record.checkpoint == sorted((run / "checkpoints").glob("step_*"))[-1].name
    assert not tcl_lite.find_label_issues(run).applied.any()


@pytest.fixture(scope="module")
def full_tcl(trustworthy_tcl):
    """A complete TCL run on the digits at 40% symmetric noise (conftest.TRUSTWORTHY_TCL: digits_tcl on a
    shortened schedule), shared with test_label_issues."""
    return trustworthy_tcl


def test_full_tcl_digits_run_is_trustworthy_and_applies_right_changes(full_tcl):
    record = load_trust(full_tcl)
    assert record.level == "trustworthy", record.verdict.reasons
    assert record.info["final"] and record.checkpoint == sorted((full_tcl / "checkpoints").glob("step_*"))[-1].name
    s = record.samples()
    given, true = np.load(full_tcl / "noisy_labels.npy"), np.load(full_tcl / "true_labels.npy")
    applied = record.applied(s["confidence"])
    right, replaced = (s["suggested"][applied] == true[applied]).mean(), (given[applied] == true[applied]).mean()
    print(f"\n[digits, 40% symmetric, TRUSTWORTHY_TCL] {int(applied.sum())} changes applied of "
          f"{int((s['suggested'] != given).sum())} proposed: {right:.3f} right, the labels they replace {replaced:.3f}")
    assert applied.sum() >= 100
    assert right >= 0.9 and replaced <= 0.1
    cleaned = np.where(applied, s["suggested"], given)
    assert (cleaned == true).mean() > (given == true).mean() + 0.1


def test_cleaned_labels_and_label_issues_columns_follow_the_threshold(full_tcl, tmp_path):
    record = load_trust(full_tcl)
    report = make_report(full_tcl, tmp_path / "report")
    lines = (report / "report.md").read_text().splitlines()
    assert lines[2].startswith("## Trust verdict: **trustworthy**")
    with open(report / "cleaned_labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CLEANED_COLUMNS
    given, corrected = (np.array([int(r[c]) for r in rows]) for c in ("given_label", "corrected_label"))
    conf = np.array([float(r["confidence"]) if r["confidence"] else np.nan for r in rows])
    applied = np.array([int(r["applied"]) for r in rows], bool)
    assert np.array_equal(applied, (corrected != given) & (conf >= record.threshold))
    assert np.all(conf[corrected == given] == 0) and applied.sum() > 0
    assert np.array_equal([int(r["cleaned_label"]) for r in rows], np.where(applied, corrected, given))
    assert {r["verdict"] for r in rows} == {"trustworthy"}

    issues = tcl_lite.find_label_issues(full_tcl)
    from tcl_lite.results.label_issues import write_issues

    summary = write_issues(issues, tmp_path / "issues", top=4)
    assert summary["verdict"] == "trustworthy" and summary["applied"] == int(applied.sum())
    with open(tmp_path / "issues" / "label_issues.csv", newline="") as f:
        ranked = list(csv.DictReader(f))
    for r in ranked:
        i = int(r["index"])
        assert int(r["applied"]) == applied[i] and int(r["suggested_label"]) == corrected[i]
        assert float(r["confidence"]) == pytest.approx(conf[i], abs=1e-5)


# ---------------------------------------------------------------------------------------------------
# a method without trust hooks (e.g. a new method before its author adds them)


def test_a_method_without_trust_hooks_is_judged_on_the_generic_signals_named_so(tmp_path, fresh_accelerate):
    from tcl_lite.engine.trust_monitor import signals_text
    from tcl_lite.methods.base import Method
    from tcl_lite.methods.mlnt.method import MLNT

    class Keeps(Method):  # keeps per-sample verdicts, declares no hook
        name = "keeps"

        @classmethod
        def per_sample_outputs(cls, state):
            return {}

    assert signals_text(Keeps, "detection") == ""
    assert signals_text(Keeps, "diagnostic pass").endswith("keeps declares no trust hooks")
    assert "its per-sample verdicts" in signals_text(Keeps, "diagnostic pass")
    assert signals_text(MLNT, "diagnostic pass").endswith("exposes no detection of its own (trust_signals)")
    assert "its per-sample verdicts" not in signals_text(MLNT, "diagnostic pass")

    # CE declares none: its verdict's first evidence says what it was judged on, in trust.json and train.log.
    from tcl_lite.config import load_config
    from tcl_lite.engine import train

    run = tmp_path / "ce"
    train(load_config(None, [*TINY, "method=ce", "train.epochs=1", f"output_dir={run}"]))
    record = load_trust(run)
    assert record.verdict.evidence[0].startswith("judged on the generic signals of the end-of-training pass")
    assert record.verdict.evidence[0].endswith("ce declares no trust hooks") and record.info["signals"]
    assert "  . judged on the generic signals" in (run / "train.log").read_text()
