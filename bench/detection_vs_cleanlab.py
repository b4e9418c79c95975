"""TCL's clean probability vs cleanlab's label-quality ranking on the same noisy training set.

    pip install cleanlab                          # benchmark-only dependency (not in requirements.txt)
    python bench/detection_vs_cleanlab.py --quick # digits, 50% symmetric, 30 epochs, 3 folds: ~5 min
    python bench/detection_vs_cleanlab.py         # digits, 50% symmetric, 30 epochs, 4 folds
    python bench/detection_vs_cleanlab.py --noise-rate 0.8
    python bench/detection_vs_cleanlab.py --tcl-run runs/digits_tcl   # a finished TCL run instead of a new one

* TCL: ``python train.py --config configs/digits_tcl.yaml`` (subprocess) -- or the finished run given by
  ``--tcl-run`` (``make bench`` passes noise_accuracy's) -- then its newest checkpoint's clean
  probability ``w`` through ``tcl_lite.results.export`` (the file interface users get).
* cleanlab: out-of-fold predicted probabilities of CE with the TCL run's own resolved config
  (``method=ce``: same data, noise draw, backbone, optimizer, schedule and epoch budget): K CE runs, each
  trained on K-1 folds of the same noisy labels (checked against the exported given labels) and
  predicting the held-out fold (test transform). Then ``cleanlab.rank.get_label_quality_scores``
  (self-confidence) and ``cleanlab.filter.find_label_issues``. The K folds cost K x (K-1)/K CE
  trainings; TCL needs one run.

Figures, with the true labels: ROC AUC of each score for "label is clean"; precision = recall when
flagging the true number of noisy labels (the k lowest scores, k = true noise count); and the
precision / recall of each method's own decision (TCL ``w < 0.5``; cleanlab ``find_label_issues``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from common import OUT, markdown_table, print_header, read_metrics, run_train


def _require_cleanlab() -> None:
    try:
        import cleanlab  # noqa: F401
    except ImportError:
        sys.exit("cleanlab is not installed; it is a benchmark-only dependency: pip install cleanlab")


def tcl_clean_probability(run_dir: Path, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Train TCL (subprocess) unless ``--tcl-run`` names a finished run, and export its clean probability.

    Returns (w, given, true, training s); a reused run's time is its own training time from metrics.jsonl.
    """
    from tcl_lite.results.export import export

    if args.tcl_run is None:
        wall, _ = run_train(run_dir, ["--config", "configs/digits_tcl.yaml", f"data.noise_rate={args.noise_rate}",
                                      f"train.epochs={args.epochs}", f"tcl.warmup_epochs={max(1, args.epochs // 3)}",
                                      f"seed={args.seed}", "checkpoint.keep_last=1"], log=run_dir.parent / "tcl.log")
    else:
        metrics = read_metrics(run_dir)
        if not metrics or "detection_auc" not in metrics[-1]:
            sys.exit(f"--tcl-run {run_dir}: no finished TCL run there (metrics.jsonl with detection figures)")
        wall = float(metrics[-1]["time"])
    out = export(run_dir, run_dir / "export")
    load = lambda name: np.load(out / f"{name}.npy", allow_pickle=False)  # noqa: E731
    return load("clean_probability"), load("given_label"), load("true_label"), wall


def out_of_fold_probs(args: argparse.Namespace, tcl_config: Path, given: np.ndarray) -> tuple[np.ndarray, float]:
    """[N, K] softmax of CE models that never trained on the sample (the TCL run's recipe, method=ce)."""
    import torch
    from accelerate import Accelerator

    from tcl_lite import load_config  # registers the built-ins first
    from tcl_lite.data import build_data
    from tcl_lite.engine.optim import build_optimizer, lr_at, peak_lr, set_lr
    from tcl_lite.models.network import build_model

    cfg = load_config(tcl_config, ["method=ce", "train.cpu=true"])
    data = build_data(cfg.data, cfg.seed)
    if not np.array_equal(data.noisy_labels, given):
        raise RuntimeError("the CE folds would see another noise draw than the TCL run; same seed and config needed")
    acc = Accelerator(cpu=True)
    n, k = len(given), data.num_classes
    rng = np.random.default_rng(cfg.seed)
    fold_of = rng.permutation(n) % args.folds
    probs = np.zeros((n, k), dtype=np.float64)
    train_views, eval_set = data.train_views(("weak",)), data.train_eval()
    t0 = time.perf_counter()
    for f in range(args.folds):
        torch.manual_seed(cfg.seed + f)
        held = np.flatnonzero(fold_of == f)
        train_idx = np.flatnonzero(fold_of != f)
        model = build_model(cfg.model, k, in_channels=data.channels, image_size=data.image_size)
        max_lr = peak_lr(cfg.optim, cfg.train.batch_size)
        opt = build_optimizer(cfg.optim, model, max_lr)
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(train_views, train_idx.tolist()),
                                             batch_size=cfg.train.batch_size, shuffle=True, drop_last=True,
                                             num_workers=cfg.data.num_workers)
        steps = len(loader)
        for epoch in range(cfg.train.epochs):
            train_views.set_epoch(epoch)
            model.train()
            for i, batch in enumerate(loader):
                set_lr(opt, lr_at(cfg.optim, max_lr, epoch + i / steps, cfg.train.epochs))
                # The noisy label by index: the fold's training labels are exactly the TCL run's.
                labels = torch.as_tensor(given[batch["index"].numpy()])
                loss = torch.nn.functional.cross_entropy(model(batch["image"]).logits.float(), labels)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        model.eval()
        held_loader = torch.utils.data.DataLoader(torch.utils.data.Subset(eval_set, held.tolist()), batch_size=512)
        with torch.no_grad():
            for batch in held_loader:
                probs[batch["index"].numpy()] = model(batch["image"]).logits.float().softmax(1).numpy()
        print(f"  CE fold {f + 1}/{args.folds} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    del acc
    return probs, time.perf_counter() - t0


def flag_metrics(noisy: np.ndarray, flagged: np.ndarray) -> tuple[float, float]:
    tp = float((flagged & noisy).sum())
    return tp / max(1, flagged.sum()), tp / max(1, noisy.sum())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 folds (the epoch budget stays 30: shorter TCL runs "
                   "stop before their corrected targets settle, which is no verdict on detection)")
    p.add_argument("--noise-rate", type=float, default=0.5, help="symmetric noise rate on digits")
    p.add_argument("--epochs", type=int, default=30, help="epoch budget of TCL and of every CE fold")
    p.add_argument("--folds", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tcl-run", type=Path, help="a finished TCL run directory to compare instead of training one "
                   "(its config.yaml sets data, noise, seed and epochs; the CE folds reuse it with method=ce)")
    args = p.parse_args()
    _require_cleanlab()
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.metrics import roc_auc_score

    if args.quick:
        args.folds = 3
    run_dir = args.tcl_run or OUT / "detection_vs_cleanlab" / f"tcl_sym{int(args.noise_rate * 100)}_e{args.epochs}"
    if args.tcl_run is not None:
        from tcl_lite import load_config  # registers the built-ins first

        if not (run_dir / "config.yaml").is_file():
            sys.exit(f"--tcl-run {run_dir}: no config.yaml there; pass the output directory of a TCL training run")
        cfg = load_config(run_dir / "config.yaml")
        if cfg.method != "tcl":
            sys.exit(f"--tcl-run {run_dir}: that run's method is {cfg.method!r}, not 'tcl'")
        args.noise_rate, args.epochs = cfg.data.noise_rate, cfg.train.epochs
        setting = f"{cfg.data.dataset}, {cfg.data.noise_type} {cfg.data.noise_rate:.0%}"
    else:
        setting = f"digits, symmetric {args.noise_rate:.0%}"
    print_header(f"detection_vs_cleanlab: {setting}, {args.epochs} epochs, {args.folds}-fold CE for cleanlab"
                 + (" (QUICK)" if args.quick else ""))
    w, given, true, tcl_wall = tcl_clean_probability(run_dir, args)
    probs, ce_wall = out_of_fold_probs(args, run_dir / "config.yaml", given)
    quality = get_label_quality_scores(given, probs)
    issues = find_label_issues(given, probs)

    noisy = given != true
    k = int(noisy.sum())
    rows = []
    for name, clean_score, own_flags, wall in (
            ("TCL clean probability w", w, w < 0.5, tcl_wall),
            ("cleanlab label quality (OOF CE)", quality, issues, ce_wall)):
        auc = roc_auc_score(~noisy, clean_score)
        flagged_k = np.zeros(len(noisy), dtype=bool)
        flagged_k[np.argsort(clean_score, kind="stable")[:k]] = True
        p_k, _ = flag_metrics(noisy, flagged_k)
        p_own, r_own = flag_metrics(noisy, own_flags)
        rows.append([name, f"{auc:.4f}", f"{p_k:.3f}", f"{int(own_flags.sum())}", f"{p_own:.3f}", f"{r_own:.3f}",
                     f"{wall:.0f}"])
    print(f"N = {len(noisy)} training labels, {k} truly noisy ({k / len(noisy):.1%})\n")
    print(markdown_table(["ranking", "ROC AUC (clean)", "precision = recall at true noise count",
                          "own flags", "own precision", "own recall", "training wall s"], rows))


if __name__ == "__main__":
    main()
