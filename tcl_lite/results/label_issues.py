"""``tcl_lite.find_label_issues(run_dir)``: the training samples of a run ranked by how likely their
given label is wrong, for every registered method.

Each method scores in its own way through its class's ``label_issue_scores(scoring)`` (see
``methods/base.py``), given a ``ScoringContext`` on the run's checkpoint. The built-in ones:

* default (e.g. ``ce``): ``1 - p(given label)``, the self-confidence of the given label under the run's
  inference model (``load_network``), from a pass over the training set with the test transform;
  the argmax as the suggestion;
* ``tcl``: ``1 - w``, TCL's clean probability from the checkpoint's detection state, and its
  corrected label as the suggestion (no forward pass);
* ``mlnt``: the self-confidence of MLNT's teacher (the EMA model it evaluates and reports).

The scores are computed at call time from a checkpoint (the final one by default), so any run,
finished or stopped, can be audited without retraining. The run's trust verdict (``algorithms/trust.py``,
from its ``trust.json``) comes with them, and for the checkpoint its diagnostics cover (the final one) a
confidence per proposed change and the ``applied`` flag of those to use (a ``trustworthy`` run's changes at
or above the threshold; none in a ``doubtful`` or ``not usable`` run, whose ranking is for review).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tcl_lite.algorithms.trust import APPLY_THRESHOLD, Verdict
from tcl_lite.algorithms.trust_files import confidence_for, load_trust, missing_verdict
from tcl_lite.checkpoints.reader import read_method_state
from tcl_lite.errors import RunError
from tcl_lite.inference.run_loading import choose_checkpoint, load_network, predict_probabilities, run_config, run_data
from tcl_lite.methods import get_method
from tcl_lite.results.gallery import draw_gallery


@dataclass
class LabelIssues:
    """Training samples ranked by ``score`` (most suspect first); arrays are in rank order."""

    index: np.ndarray  # position in the run's training set (noisy_labels.npy)
    given: np.ndarray
    suggested: np.ndarray
    score: np.ndarray  # higher = the given label is more likely wrong, in [0, 1]
    class_names: list[str]
    method: str
    checkpoint: str
    true: np.ndarray | None = None  # when the run knows the true labels
    paths: list[str] | None = None  # image files, for folder and list datasets
    root: str | None = None  # the dataset root the gallery names ``paths`` relative to
    data: Any = field(default=None, repr=False)  # the DataBundle, for thumbnails
    confidence: np.ndarray | None = None  # of each proposed change (NaN: not covered by the trust diagnostics)
    applied: np.ndarray | None = None  # bool: the changes to use (a trustworthy run's confident ones)
    verdict: Verdict | None = None  # the run's trust verdict
    threshold: float = APPLY_THRESHOLD

    def __len__(self) -> int:
        return len(self.index)

    def precision_at(self, n: int) -> float | None:
        """Fraction of the top ``n`` whose given label is truly wrong (None without true labels)."""
        if self.true is None:
            return None
        n = min(n, len(self))
        return float((self.given[:n] != self.true[:n]).mean()) if n else 0.0

    @property
    def noise_rate(self) -> float | None:
        """True fraction of wrong given labels: the precision@N of a random ranking."""
        return None if self.true is None else float((self.given != self.true).mean())

    def rows(self) -> list[dict[str, Any]]:
        names = self.class_names
        out = []
        for r in range(len(self)):
            row = {"rank": r + 1, "index": int(self.index[r]), "given_label": int(self.given[r]),
                   "given_name": names[self.given[r]], "suggested_label": int(self.suggested[r]),
                   "suggested_name": names[self.suggested[r]], "score": float(self.score[r]),
                   "confidence": None if self.confidence is None or np.isnan(self.confidence[r])
                   else float(self.confidence[r]),
                   "applied": int(self.applied[r]) if self.applied is not None else 0}
            if self.true is not None:
                row["true_label"] = int(self.true[r])
            if self.paths is not None:
                row["path"] = self.paths[r]
            out.append(row)
        return out

    def to_csv(self, path: str | Path) -> Path:
        rows = self.rows()
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            for row in rows:
                writer.writerow({k: format(v, ".6g") if isinstance(v, float) else "" if v is None else v
                                 for k, v in row.items()})
        return Path(path)


@dataclass
class ScoringContext:
    """What a method's ``label_issue_scores`` scores with: the run's config, its checkpoint folder
    (``ckpt``) and data, and how to run its networks."""

    cfg: Any
    ckpt: Path
    data: Any
    batch_size: int
    device: Any

    def method_state(self) -> dict[str, Any]:
        """The checkpoint's method state (``Method.state_dict()`` as saved; tensors on the CPU)."""
        return read_method_state(self.ckpt)

    def probabilities(self, weights: dict[str, dict] | None = None) -> np.ndarray:
        """Softmax [N, K] of the run's inference model over the training set (test transform), with the
        checkpoint's weights or ``weights`` (state dicts by network name; a name left out: the checkpoint's)."""
        net = load_network(self.cfg, self.ckpt, self.data.num_classes, self.data.image_size, state=weights)
        return predict_probabilities(net, self.data.train_eval(), self.batch_size, self.device)

    def self_confidence(self, weights: dict[str, dict] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(1 - p(given label), argmax)`` per training sample, in dataset order (see ``probabilities``)."""
        probs = self.probabilities(weights)
        given = self.data.noisy_labels
        return 1.0 - probs[np.arange(len(given)), given], probs.argmax(axis=1)

    def error(self, msg: str) -> RunError:
        """The error to raise when the checkpoint lacks what the method scores with."""
        return RunError(msg)


def find_label_issues(run_dir: str | Path, checkpoint: str = "final", *, batch_size: int = 256,
                      device: Any = None) -> LabelIssues:
    """Rank the training samples of ``run_dir`` by how likely their given label is wrong.

    ``checkpoint``: ``final`` (newest valid), ``best`` or a checkpoint folder. Rebuilds the run's
    data from its config (the dataset must be where the run read it) and checks that its noisy labels
    are the saved ones. Returns a ``LabelIssues`` (``.rows()``, ``.to_csv()``, ``.precision_at(n)``).
    """
    run_dir = Path(run_dir)
    cfg = run_config(run_dir)
    method_cls = get_method(cfg.method)
    ckpt = choose_checkpoint(run_dir, checkpoint)
    data = run_data(run_dir, cfg)
    score, suggested = method_cls.label_issue_scores(ScoringContext(cfg, ckpt, data, batch_size, device))
    score = np.asarray(score)
    # Most suspect first; ties (e.g. w = 0 for many samples) broken by index for a stable order.
    order = np.lexsort((np.arange(len(score)), -score))
    true = data.true_labels
    if true is not None and np.array_equal(true, data.noisy_labels):
        true = None  # labels taken as given (e.g. a folder without synthetic noise): the truth is unknown
    images = data.train.images
    paths = [images.paths[i] for i in order] if hasattr(images, "paths") else None
    suggested = np.asarray(suggested)
    record = load_trust(run_dir)
    found = confidence_for(record, ckpt, suggested)
    return LabelIssues(index=order, given=data.noisy_labels[order], suggested=suggested[order],
                       score=np.clip(score[order], 0.0, 1.0), class_names=list(data.class_names), method=cfg.method,
                       checkpoint=str(ckpt), true=None if true is None else true[order],
                       paths=paths, root=cfg.data.root if paths is not None else None, data=data,
                       confidence=None if found is None else found[0][order],
                       applied=None if found is None else found[1][order],
                       verdict=record.verdict if record is not None else missing_verdict(),
                       threshold=record.threshold if record is not None else APPLY_THRESHOLD)


def write_issues(issues: LabelIssues, out_dir: str | Path, top: int = 24) -> dict[str, Any]:
    """``label_issues.csv``, ``label_issues.png`` (the gallery) and ``summary.json`` in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    issues.to_csv(out_dir / "label_issues.csv")
    shown = draw_gallery(issues, out_dir / "label_issues.png", top=top)
    verdict = issues.verdict or missing_verdict()
    summary = {"method": issues.method, "checkpoint": issues.checkpoint, "samples": len(issues), "top": top,
               "shown_suspects": shown["suspects"], "shown_clean": shown["clean"],
               "precision_at_top": issues.precision_at(top), "noise_rate": issues.noise_rate,
               "verdict": verdict.level, "reasons": verdict.reasons, "threshold": issues.threshold,
               "applied": int(issues.applied.sum()) if issues.applied is not None else 0,
               "confidence_covered": issues.confidence is not None}
    for n in (10, 50, 100):
        if issues.true is not None and n <= len(issues):
            summary[f"precision_at_{n}"] = issues.precision_at(n)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
