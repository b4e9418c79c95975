"""Are the trust verdicts right? Runs with known true labels, judged as a user's run would be (no true labels).

    python bench/trust_validation.py                 # the whole grid, one run after another (~2 h, one core)
    python bench/trust_validation.py --only 'digits_*' # the digits rows only (names or shell patterns)
    python bench/trust_validation.py --rescore       # no training: re-judge the saved runs with the current
                                                     # thresholds (tuning), and print the table again

Every run is ``python train.py`` in a subprocess with ``OMP_NUM_THREADS=1`` (one core), ``seed=0``:

* **digits** (embedded, 1,257 training images): the presets ``digits_tcl``, ``digits_dividemix``,
  ``digits_mlnt`` and ``digits_tcl`` with ``method=ce`` (CE on TCL's settings), at symmetric 20/40/80%
  and pair-flip 20/45% noise (asymmetric noise is defined for CIFAR's classes only);
* **CIFAR-10 subset**: 2,000 class-balanced training JPEGs of ``../shared/data/cifar10-jpeg.tar.gz``
  (extracted into bench/out/), a tiny CNN at 32 px as ``bench/noise_accuracy.py``'s subset, 20 epochs,
  at symmetric 20/50%, asymmetric 40% and pair-flip 45% (CE, TCL; DivideMix, ProMix and MLNT at 50%);
* **short** runs: ending inside the warm-up, or one to two epochs after it;
* **notebook**: what the notebook trains on a CPU, each method's own digits preset with its own noise.

Per run: the verdict (``trust.json``, as the run wrote it, or re-judged with ``--rescore``); every change
the method proposes (its corrected / suggested label differs from the given one) against the true labels:
how many, how often right, how often the label it replaces was right, and whether applying them all
improves the labels; the same for the changes whose confidence passes the apply threshold; the precision
of the ranking's top 100 (the 100 labels ``tcl-lite issues`` ranks as most likely wrong, truly wrong?).
The verdict is right when ``trustworthy`` runs' corrections help and the other runs' would not have (or
are held back by the verdict). Results: ``bench/out/trust_validation.json``; run logs in
``bench/out/trust_validation/<run>.log``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from common import OUT, cifar_root, markdown_table, print_header, run_train
from noise_accuracy import method_args

from tcl_lite.algorithms import trust
from tcl_lite.algorithms.trust_files import load_trust

RUNS = OUT / "trust_validation"
DIGITS_NOISE = [("symmetric", 0.2), ("symmetric", 0.4), ("symmetric", 0.8), ("pairflip", 0.2), ("pairflip", 0.45)]
CIFAR_NOISE = [("symmetric", 0.2), ("symmetric", 0.5), ("asymmetric", 0.4), ("pairflip", 0.45)]


@dataclass
class Run:
    name: str
    dataset: str
    method: str
    noise: tuple[str, float]
    args: list[str]
    length: str = "full"  # full | short (ends inside or just after the warm-up) | reduced (a shortened schedule)
    needs: str = ""  # the run whose directory is MLNT's feature network
    outcome: dict = field(default_factory=dict)


def _noise_args(noise: tuple[str, float]) -> list[str]:
    return [f"data.noise_type={noise[0]}", f"data.noise_rate={noise[1]}"]


def _cifar_base(epochs: int = 20) -> list[str]:
    # bench/noise_accuracy.py's CIFAR subset recipe: the digits_tcl settings on 32 px JPEGs, a wider tiny CNN.
    return ["--config", "digits_tcl", "data.dataset=imagefolder", f"data.root={cifar_root()}", "data.image_size=32",
            "data.train_subset=2000", "data.test_subset=1000", "model.arch=tiny_cnn", "model.width=32",
            "train.batch_size=64", f"train.epochs={epochs}", "tcl.warmup_epochs=6"]


CIFAR_DIVIDEMIX = ["method=dividemix", "model.head=linear", "optim.lr=0.02", "optim.scale_lr=false",
                   "optim.weight_decay=5e-4", "optim.schedule=step", "optim.milestones=[10]",
                   "dividemix.warmup_epochs=6", "dividemix.rampup_epochs=5", "dividemix.lambda_u=25"]
MLNT_RAMPS = ["mlnt.start_iter=10", "mlnt.mid_iter=30", "mlnt.ema_decay_rampup=0.9", "mlnt.ema_decay=0.97"]


def _tag(noise: tuple[str, float]) -> str:
    return f"{noise[0][:4]}{round(100 * noise[1])}"


def digits_runs() -> list[Run]:
    runs = []
    for noise in DIGITS_NOISE:
        t = _tag(noise)
        runs += [Run(f"digits_{t}_ce", "digits", "ce", noise, ["--config", "digits_tcl", "method=ce"]),
                 Run(f"digits_{t}_tcl", "digits", "tcl", noise, ["--config", "digits_tcl"])]
    for noise in (("symmetric", 0.4), ("symmetric", 0.8), ("pairflip", 0.45)):
        runs.append(Run(f"digits_{_tag(noise)}_dividemix", "digits", "dividemix", noise,
                        ["--config", "digits_dividemix"]))
    for noise in (("symmetric", 0.4), ("pairflip", 0.45)):
        t = _tag(noise)
        runs += [Run(f"digits_{t}_mlntfeat", "digits", "ce", noise, ["--config", "digits_mlnt", "method=ce"],
                     length="feature"),
                 Run(f"digits_{t}_mlnt", "digits", "mlnt", noise, ["--config", "digits_mlnt"],
                     needs=f"digits_{t}_mlntfeat")]
    s40 = ("symmetric", 0.4)
    runs += [Run("digits_symm40_tcl_e8", "digits", "tcl", s40, ["--config", "digits_tcl", "train.epochs=8"], "short"),
             Run("digits_symm40_tcl_e12", "digits", "tcl", s40, ["--config", "digits_tcl", "train.epochs=12"], "short"),
             Run("digits_pair45_tcl_e12", "digits", "tcl", ("pairflip", 0.45),
                 ["--config", "digits_tcl", "train.epochs=12"], "short"),
             Run("digits_symm40_dividemix_e12", "digits", "dividemix", s40,
                 ["--config", "digits_dividemix", "train.epochs=12"], "short"),
             # shortened schedules (the warm-up keeps about its share): where the test's cheap TCL run comes from
             *[Run(f"digits_symm40_tcl_e{e}w{w}" + (f"px{px}" if px != 16 else ""), "digits", "tcl", s40,
                   ["--config", "digits_tcl", f"train.epochs={e}", f"tcl.warmup_epochs={w}", f"data.image_size={px}"],
                   "reduced") for e, w, px in ((8, 3, 16), (10, 4, 12), (12, 6, 12), (15, 6, 12), (20, 7, 16))],
             Run("digits_symm40_ce_e2", "digits", "ce", s40, ["--config", "digits_tcl", "method=ce", "train.epochs=2"],
                 "short"),
             Run("digits_symm40_mlnt_e1", "digits", "mlnt", s40,
                 ["--config", "digits_mlnt", "train.epochs=1", "mlnt.start_iter=100", "mlnt.mid_iter=200"], "short",
                 needs="digits_symm40_mlntfeat")]
    return runs


def notebook_runs() -> list[Run]:
    """What the notebook trains on a CPU: each method's own digits preset, with its own noise."""
    s20, s40, s50 = ("symmetric", 0.2), ("symmetric", 0.4), ("symmetric", 0.5)
    return [Run("nb_digits_ce", "digits", "ce", s40, ["--config", "digits_ce"]),
            Run("nb_digits_tcl", "digits", "tcl", s50, ["--config", "digits_tcl"]),
            Run("nb_digits_dividemix", "digits", "dividemix", s50, ["--config", "digits_dividemix"]),
            Run("nb_digits_promix", "digits", "promix", s50, ["--config", "digits_promix"]),
            Run("nb_digits_mlntfeat", "digits", "ce", s20, ["--config", "digits_mlnt", "method=ce"], length="feature"),
            Run("nb_digits_mlnt", "digits", "mlnt", s20, ["--config", "digits_mlnt"], needs="nb_digits_mlntfeat")]


def cifar_runs() -> list[Run]:
    runs = []
    for noise in CIFAR_NOISE:
        t = _tag(noise)
        runs += [Run(f"cifar_{t}_ce", "cifar10", "ce", noise, [*_cifar_base(), "method=ce"]),
                 Run(f"cifar_{t}_tcl", "cifar10", "tcl", noise, _cifar_base())]
    s50 = ("symmetric", 0.5)
    runs += [Run("cifar_symm50_dividemix", "cifar10", "dividemix", s50, [*_cifar_base(), *CIFAR_DIVIDEMIX]),
             # noise_accuracy.py's ProMix recipe on the subset (its schedules scaled to the 20 epochs)
             Run("cifar_symm50_promix", "cifar10", "promix", s50, [*_cifar_base(), *method_args("promix", None, 20)]),
             # 4 epochs: one MLNT step costs ~10 CE steps (10 synthetic label sets, second order)
             Run("cifar_symm50_mlnt", "cifar10", "mlnt", s50, [*_cifar_base(4), "method=mlnt", *MLNT_RAMPS],
                 needs="cifar_symm50_ce"),
             Run("cifar_symm50_tcl_e8", "cifar10", "tcl", s50, _cifar_base(8), "short"),
             Run("cifar_symm50_tcl_e5", "cifar10", "tcl", s50, _cifar_base(5), "short")]
    return runs


def train_one(run: Run) -> float:
    extra = [f"mlnt.feature_checkpoint={RUNS / run.needs}"] if run.needs else []
    wall, _ = run_train(RUNS / run.name, [*run.args, *_noise_args(run.noise), "seed=0", "data.num_workers=0",
                                          "checkpoint.keep_last=1", "train.log_every=1000", *extra],
                        log=RUNS / f"{run.name}.log")
    return wall


# ---------------------------------------------------------------------------------------------------
# Scoring a run against its true labels


def _changes(mask: np.ndarray, given: np.ndarray, suggested: np.ndarray, true: np.ndarray) -> dict:
    n = int(mask.sum())
    right, replaced = (suggested[mask] == true[mask]), (given[mask] == true[mask])
    return {"n": n, "right": float(right.mean()) if n else None,
            "replaced_right": float(replaced.mean()) if n else None, "net": int(right.sum()) - int(replaced.sum())}


def score(run_dir: Path, rescore: bool) -> dict:
    rec = load_trust(run_dir)
    if rec is None:
        return {"error": "no trust.json"}
    s = rec.samples() or {}
    given, true = np.load(run_dir / "noisy_labels.npy"), np.load(run_dir / "true_labels.npy")
    level, reasons = rec.level, rec.verdict.reasons
    if rescore:
        info = rec.info
        state = trust.RunState(info["method"], float(info["epoch"]), int(info["epochs"]), float(info["warmup_epochs"]),
                               info.get("warmup_setting", ""), bool(info.get("per_epoch_detection")),
                               bool(info.get("stopped")), str(info.get("signals", "")))
        diag = dict(rec.diagnostics or {})
        if s and diag:  # the confident share with the current confidence and threshold
            changed = s["suggested"] != given
            confidence = trust.change_confidence(s["noisy_probability"], s["classifier_support"], s["knn_preference"],
                                                 changed)
            diag["confident_share"] = float((confidence[changed] >= trust.APPLY_THRESHOLD).mean()) \
                if changed.any() else float("nan")
        verdict = trust.judge(diag or None, state)
        level, reasons = verdict.level, verdict.reasons
    out = {"verdict": level, "reasons": reasons, "diagnostics": rec.diagnostics,
           "label_acc": float((given == true).mean()), "noise": float((given != true).mean())}
    if not s:
        return out
    suggested = s["suggested"]
    changed = suggested != given
    conf = (trust.change_confidence(s["noisy_probability"], s["classifier_support"], s["knn_preference"], changed)
            if rescore else s["confidence"])
    confident = changed & (conf >= (trust.APPLY_THRESHOLD if rescore else rec.threshold)) & (conf > 0)
    order = np.lexsort((np.arange(len(given)), -s["noisy_probability"]))[:100]
    out.update(all=_changes(changed, given, suggested, true), confident=_changes(confident, given, suggested, true),
               applied=int((confident & (level == trust.TRUSTWORTHY)).sum()),
               top100=float((given[order] != true[order]).mean()))
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}"


def effect(o: dict) -> str:
    """What applying every proposed change does to the label accuracy: helps / hurts (by more than a point)."""
    gain = o["all"]["net"] / len_of(o)
    return "helps" if gain > 0.01 else "hurts" if gain < -0.01 else "no effect"


def fits(o: dict) -> str:
    """Whether the verdict is right: a trustworthy run's applied changes help; a run whose changes hurt is not
    trustworthy. A doubtful / not usable run whose changes would have helped is a conservative miss."""
    if o["verdict"] == "trustworthy":
        return "yes" if effect(o) != "hurts" and o["confident"]["net"] > 0 else "**no: harmful changes applied**"
    return "miss (held back helpful changes)" if effect(o) == "helps" else "yes"


def row(run: Run, o: dict) -> list:
    noise = f"{run.noise[0]} {round(100 * run.noise[1])}%"
    if "all" not in o:
        return [run.name, noise, o.get("verdict", o.get("error", "?")), *["-"] * 8]
    a, c = o["all"], o["confident"]
    why = "; ".join(r.split(":")[0] for r in o["reasons"])  # each reason's first clause
    return [run.name, noise, f"**{o['verdict']}**", f"{a['n']}: {_pct(a['right'])} / {_pct(a['replaced_right'])}",
            f"{_pct(o['label_acc'])} → {_pct(o['label_acc'] + a['net'] / len_of(o))} / "
            f"{_pct(o['label_acc'] + c['net'] / len_of(o))}",
            f"{c['n']}: {_pct(c['right'])} / {_pct(c['replaced_right'])}", o["applied"], _pct(o["top100"]),
            effect(o), fits(o), why]


def len_of(o: dict) -> int:
    return int(round(o["diagnostics"].get("num_samples") or 1))


HEADERS = ["run", "noise", "verdict", "proposed changes: n: right % / replaced right %",
           "label acc %: given → all proposed / confident ones applied",
           "confident changes: n: right % / replaced right %", "applied", "top-100 precision %", "proposed changes",
           "verdict right?", "reasons"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="", help="comma-separated run names or shell patterns (digits_*) to keep")
    p.add_argument("--rescore", action="store_true", help="no training: re-judge the saved runs")
    p.add_argument("--reuse", action="store_true", help="keep the runs that finished before (status.json)")
    p.add_argument("--datasets", default="digits,cifar10,notebook",
                   help="comma-separated groups: digits, cifar10, notebook (each method's own digits preset, as the "
                        "notebook trains it on a CPU)")
    args = p.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"  # one core per run, one run at a time
    print_header("trust_validation: trust verdicts against the true labels" + (" (rescored)" if args.rescore else ""))
    groups = args.datasets.split(",")
    runs = ((digits_runs() if "digits" in groups else []) + (cifar_runs() if "cifar10" in groups else [])
            + (notebook_runs() if "notebook" in groups else []))
    if args.only:
        chosen = [r for r in runs if any(fnmatch.fnmatchcase(r.name, k) for k in args.only.split(","))]
        needed = {r.needs for r in chosen}
        runs = [r for r in runs if r in chosen or r.name in needed]
    rows, results = [], []
    out = OUT / ("trust_validation_rescored.json" if args.rescore else "trust_validation.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    for run in runs:
        run_dir = RUNS / run.name
        wall = None
        finished = (run_dir / "status.json").is_file() and '"finished"' in (run_dir / "status.json").read_text()
        if not args.rescore and not (args.reuse and finished):
            try:
                wall = train_one(run)
            except RuntimeError as e:
                print(f"{run.name}: {e}", file=sys.stderr)
                continue
            print(f"  {run.name}: {wall:.0f}s", file=sys.stderr, flush=True)
        if run.length == "feature" or not (run_dir / "trust.json").is_file():
            continue
        run.outcome = score(run_dir, args.rescore)
        results.append({"name": run.name, "dataset": run.dataset, "method": run.method, "noise": run.noise,
                        "length": run.length, "wall_s": wall, **run.outcome})
        rows.append(row(run, run.outcome))
        out.write_text(json.dumps(results, indent=1))  # after every run: a long grid can be read while it runs
    print(markdown_table(HEADERS, rows))
    print(f"\nwrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
