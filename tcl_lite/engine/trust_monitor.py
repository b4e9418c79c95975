"""The run's trust diagnostics (``algorithms/trust.py``), as the trainer drives them.

* at start: a warning when ``train.epochs`` does not exceed the method's warm-up;
* after every evaluated epoch whose method made a new detection (``Method.trust_signals``), and after the
  last epoch in any case (a method without a detection of its own gets the diagnostic pass here: the
  ``diagnostic_model``'s softmax and features over the training set, test transform): ``diagnose`` and
  ``judge``; the figures go to the epoch's metrics record (``trust_*``), the verdict to train.log and
  status.json, both to ``trust.json`` / ``trust_samples.safetensors`` (``algorithms/trust_files.py``);
* when the run stops early: the verdict again, for the checkpoint the stop saved.

Diagnoses run on the main process (the pass on every process: its loader is sharded).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tcl_lite.algorithms.gmm_detector import gmm_clean_probability, minmax
from tcl_lite.algorithms.trust import (
    APPLY_THRESHOLD,
    LEVELS,
    RunState,
    SampleTrust,
    TrustSignals,
    Verdict,
    diagnose,
    judge,
)
from tcl_lite.algorithms.trust_files import load_trust, save_trust
from tcl_lite.methods import Method
from tcl_lite.methods.per_sample import per_sample_pass


def signals_text(method: Any, source: str) -> str:
    """What the verdict is judged on when not the method's own detection: the generic signals of the
    end-of-training pass, named so (all a method that declares no trust hooks gets)."""
    if source == "detection":
        return ""
    cls = method if isinstance(method, type) else type(method)
    # a method takes part by naming its warm-up (the base hooks read it and its pending_signals) or by its own hooks
    hooks = bool(cls.warmup_setting) or any(getattr(cls, h) is not getattr(Method, h)
                                            for h in ("warmup_epochs", "trust_signals", "diagnostic_model"))
    keeps = getattr(cls.per_sample_outputs, "__func__", None) is not Method.per_sample_outputs.__func__
    what = "its per-sample verdicts, its classifier's self-confidence" if keeps else "its classifier's self-confidence"
    why = "declares no trust hooks" if not hooks else "exposes no detection of its own (trust_signals)"
    return f"judged on the generic signals of the end-of-training pass ({what}, the kNN vote): {method.name} {why}"


def _warmup_text(method: Any, warm: float) -> str:
    setting = f"{method.warmup_setting}, " if method.warmup_setting else ""
    return f"{method.name}'s warm-up ({setting}{round(warm, 2):g} epochs on the given labels)"


class TrustMonitor:
    """Keeps the noise estimates of the detections after the warm-up (for their stability) and writes
    each diagnosis. ``records``: metrics.jsonl's records so far (a resumed run's history)."""

    def __init__(self, run: Any, records: list[dict[str, Any]]) -> None:
        self.run = run
        self.method = run.method
        self.warmup = float(self.method.warmup_epochs())
        self.history = [float(r["trust_est_noise"]) for r in records
                        if r.get("trust_est_noise") is not None and r.get("epoch", 0) > self.warmup]
        self.detections_seen = any(r.get("trust_est_noise") is not None for r in records)
        self.main = run.accelerator.is_main_process
        self.pending: list[str] = []  # lines for the log, printed by flush() after the epoch's own line
        self.signals = ""  # what the last diagnosis was made on (signals_text)

    def warn_if_short(self) -> None:
        epochs = self.run.cfg.train.epochs
        if self.warmup > 0 and epochs <= self.warmup:
            self.run.log(f"warning: train.epochs={epochs} does not exceed {_warmup_text(self.method, self.warmup)}: "
                         "the run will end inside it, its own verdicts will never have been used, and its trust "
                         f"verdict will be `not usable`. Train more than {round(self.warmup, 2):g} epochs (or shorten "
                         "the warm-up) for corrected labels.")

    # -- after an epoch ------------------------------------------------------------------------------
    def after_epoch(self, epochs_done: int, step: int) -> dict[str, float]:
        """Diagnose the method's new detection (after the last epoch: whatever it has, else the pass)."""
        last = epochs_done == self.run.cfg.train.epochs
        signals = self.method.trust_signals()
        if signals is None and last:
            signals = with_method_verdicts(diagnostic_pass(self.run.ctx, self.method.diagnostic_model()), self.method)
        if signals is None or not self.main:
            return {}
        diag, samples = self._diagnose(signals)
        self.detections_seen = self.detections_seen or signals.source == "detection"
        self.signals = signals_text(self.method, signals.source)
        verdict = judge(diag, self._state(epochs_done))
        if epochs_done > self.warmup:
            self.history.append(diag["est_noise"])
        self._write(verdict, diag, samples, epochs_done, step, final=last)
        if last:
            self.pending += verdict.lines()
        elif epochs_done <= self.warmup:
            self.pending.append(f"trust after epoch {epochs_done}: inside {_warmup_text(self.method, self.warmup)}")
        else:
            self.pending.append(f"trust after epoch {epochs_done}: {verdict.headline()}")
        # a diagnostic not computed (NaN, e.g. the spread of a single estimate) is left out: the record is JSON
        return {"trust_level": float(LEVELS.index(verdict.level)),
                **{f"trust_{k}": v for k, v in diag.items() if not (isinstance(v, float) and math.isnan(v))}}

    def _diagnose(self, signals: TrustSignals) -> tuple[dict[str, float], SampleTrust]:
        return diagnose(signals, history=self.history, seed=self.run.cfg.seed, device=self.run.accelerator.device)

    def _state(self, epochs_done: float, stopped: bool = False) -> RunState:
        return RunState(self.method.name, epochs_done, self.run.cfg.train.epochs, self.warmup,
                        self.method.warmup_setting, per_epoch_detection=self.detections_seen, stopped=stopped,
                        signals=self.signals)

    # -- a stop before the end -----------------------------------------------------------------------
    def stopped(self, epochs_done: float, step: int) -> None:
        """The verdict for the checkpoint a stop saved: a detection not diagnosed yet is diagnosed now;
        otherwise the last diagnosis (this process's or the file's) is judged again."""
        signals = self.method.trust_signals()
        if not self.main:
            return
        samples = None
        if signals is not None:
            diag, samples = self._diagnose(signals)
            self.signals = signals_text(self.method, signals.source)
        else:
            previous = load_trust(self.run.out)
            diag = previous.diagnostics if previous is not None and previous.checkpoint else None
            self.signals = str(previous.info.get("signals", "")) if diag is not None else ""
        verdict = judge(diag, self._state(round(epochs_done, 2), stopped=True))
        self._write(verdict, diag, samples, epochs_done, step, final=False, stopped=True)
        self.pending += verdict.lines()

    def flush(self) -> None:
        """Print (console and train.log) what the last diagnosis had to say."""
        for line in self.pending:
            self.run.log(line)
        self.pending = []

    def _write(self, verdict: Verdict, diag: dict[str, float] | None, samples: SampleTrust | None,
               epochs_done: float, step: int, *, final: bool, stopped: bool = False) -> None:
        summary = {"verdict": verdict.level, "reasons": verdict.reasons, "epoch": round(epochs_done, 2)}
        self.run.status.update(self.run.status.fields.get("state", "running"), trust=summary)
        record = {"method": self.method.name, "epoch": round(epochs_done, 2), "epochs": self.run.cfg.train.epochs,
                  "step": step, "final": final, "stopped": stopped, "warmup_epochs": self.warmup,
                  "warmup_setting": self.method.warmup_setting, "verdict": verdict.level, "reasons": verdict.reasons,
                  "evidence": verdict.evidence, "threshold": APPLY_THRESHOLD, "diagnostics": diag or {},
                  "per_epoch_detection": self.detections_seen, "noise_history": self.history, "signals": self.signals,
                  "checkpoint": f"step_{step:08d}" if diag is not None else ""}
        save_trust(self.run.out, record, samples)


def with_method_verdicts(signals: TrustSignals, method: Any) -> TrustSignals:
    """A method that keeps per-sample verdicts (``per_sample_outputs``) but exposes no signals of its own: its
    clean probability and suggested label replace the pass's self-confidence, which becomes the second opinion,
    so that the diagnostics describe the verdicts the run hands out."""
    if type(method).per_sample_outputs.__func__ is Method.per_sample_outputs.__func__:
        return signals
    state = {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in method.state_dict().items()}
    out = type(method).per_sample_outputs(state) or {}
    label = next((out[c] for c in ("corrected_label", "suggested_label") if c in out), None)
    if "clean_probability" not in out or label is None:
        return signals
    noisy_p = 1.0 - np.asarray(out["clean_probability"], dtype=np.float32)
    self_conf = 1.0 - signals.probabilities[np.arange(len(signals.given)), signals.given]
    return TrustSignals(signals.given, noisy_p, np.asarray(label, dtype=np.int64), signals.probabilities,
                        signals.features, opinions={"method": noisy_p, "classifier self-confidence": self_conf},
                        source="diagnostic pass")


@torch.no_grad()
def _softmax_and_features(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    out = model(batch["image"])
    return out.logits.float().softmax(1), F.normalize(out.features.float().flatten(1), dim=1)


def diagnostic_pass(ctx: Any, model: torch.nn.Module) -> TrustSignals:
    """The default signals: ``model``'s softmax and normalised features over the training set (test
    transform); the score is ``1 - p(given label)``, the suggestion the argmax (``label_issue_scores``'
    default), and the kNN vote is the second opinion."""
    given = np.asarray(ctx.data.noisy_labels)
    n = len(given)
    probs, feats = per_sample_pass(ctx.accelerator, ctx.loader(ctx.data.train_eval()), model, _softmax_and_features, n)
    p = probs.numpy()
    p_given = p[np.arange(n), given]
    # The noise estimate as DivideMix's co-divide makes it from a classifier's losses: a two-component
    # mixture over the normalised per-sample CE, the fraction in the high-loss component.
    w = gmm_clean_probability(minmax(-np.log(np.maximum(p_given, 1e-12)).astype(np.float32)))
    return TrustSignals(given, 1.0 - p_given, p.argmax(1), p, feats, estimated_noise=float(np.mean(w < 0.5)),
                        source="diagnostic pass")
