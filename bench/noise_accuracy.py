"""CE vs TCL (vs MLNT, DivideMix, ProMix) at equal epochs under label noise: test accuracy, detection AUC, wall time.

    python bench/noise_accuracy.py --quick                      # digits, sym 50%, 30 epochs: ~4 min
    python bench/noise_accuracy.py                              # digits (30 epochs) + CIFAR-10 JPEG subset
    python bench/noise_accuracy.py --datasets cifar10 --train-subset 5000 --test-subset 2000 --cifar-epochs 30
    python bench/noise_accuracy.py --methods ce,tcl,mlnt        # MLNT uses the CE run of the same setting as
                                                                # its frozen feature network
    python bench/noise_accuracy.py --quick --seeds 0,1,2        # the gap's mean and spread over seeds

Every run is ``python train.py`` in a subprocess with the same config except ``method`` (digits:
``configs/digits_tcl.yaml``; CIFAR-10: the same small-CNN recipe at 32 px on a class-balanced subset
of ``../shared/data/cifar10-jpeg.tar.gz``, extracted into bench/out/, because PreAct ResNet-18 TCL
takes minutes per step-heavy epoch on 2 CPU cores -- ``--cifar-arch preact_resnet18`` for the real
backbone). Noise: symmetric 50% and 80% (digits and CIFAR-10), asymmetric 40% (CIFAR-10 only: the
class map needs CIFAR-10's class names). TCL's target warm-up is a third of the epochs, as in
``configs/digits_tcl.yaml``. The figures are the LAST epoch's (no early stopping on the test set) and
the best epoch's for reference. Run logs: bench/out/noise_accuracy/<run>/train.log.

``--seeds``: ``seed`` draws the noise, the data order, the augmentations and the initial weights, so one
seed's gap is one sample; with several seeds the gap table adds their mean and standard deviation, and
the verdict is the mean's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from common import OUT, cifar_root, markdown_table, print_header, run_train

TARGET_GAP = {("symmetric", 0.5): 10.0, ("symmetric", 0.8): 20.0}  # TCL - CE, points (the targets)


def settings(dataset: str, args: argparse.Namespace) -> list[tuple[str, float, list[str]]]:
    """(noise type, rate, train.py arguments without the method) per noise setting of a dataset."""
    if dataset == "digits":
        epochs = args.digits_epochs
        base = ["--config", "configs/digits_tcl.yaml", f"train.epochs={epochs}",
                f"tcl.warmup_epochs={max(1, epochs // 3)}"]
        noises = [("symmetric", 0.5), ("symmetric", 0.8)]
    else:
        epochs = args.cifar_epochs
        base = ["--config", "configs/digits_tcl.yaml", "data.dataset=imagefolder", f"data.root={cifar_root()}",
                "data.image_size=32", f"data.train_subset={args.train_subset}",
                f"data.test_subset={args.test_subset}", f"model.arch={args.cifar_arch}", "model.width=32",
                "train.batch_size=64", f"train.epochs={epochs}", f"tcl.warmup_epochs={max(1, epochs // 3)}"]
        noises = [("symmetric", 0.5), ("symmetric", 0.8), ("asymmetric", 0.4)]
    return [(t, r, [*base, f"data.noise_type={t}", f"data.noise_rate={r}", "checkpoint.keep_last=1",
                    *args.overrides]) for t, r in noises]


def method_args(method: str, ce_dir: str | None, epochs: int = 30) -> list[str]:
    if method == "dividemix":
        # configs/digits_dividemix.yaml's recipe (the reference's optimiser and step schedule, a linear head,
        # two weak views), its warm-up a third of the run like TCL's target warm-up.
        return ["method=dividemix", "model.head=linear", "optim.lr=0.02", "optim.scale_lr=false",
                "optim.weight_decay=5e-4", "optim.schedule=step", f"optim.milestones=[{epochs // 2}]",
                f"dividemix.warmup_epochs={max(1, epochs // 3)}", "dividemix.rampup_epochs=5", "dividemix.lambda_u=25"]
    if method == "promix":
        # configs/digits_promix.yaml's recipe (the reference's optimiser, its cosine set per epoch, linear heads,
        # a weak and a RandAugment view), its schedules scaled to the run as that preset's.
        return ["method=promix", "model.head=linear", "optim.lr=0.05", "optim.scale_lr=false",
                "optim.weight_decay=5e-4", "optim.schedule=cosine", "optim.schedule_unit=epoch",
                "optim.min_lr_ratio=0.001",
                f"promix.warmup_epochs={max(1, epochs // 3)}", f"promix.w_ramp_epochs={max(1, epochs // 2)}",
                f"promix.rho_ramp_epochs={max(1, epochs // 2)}", f"promix.unlabeled_epochs={max(1, 2 * epochs // 3)}",
                f"promix.start_expand={max(1, 2 * epochs // 5)}"]
    if method != "mlnt":
        return [f"method={method}"]
    if ce_dir is None:
        raise SystemExit("--methods with mlnt needs ce first (MLNT's frozen feature network is the CE run)")
    # The ramps of configs/digits_mlnt.yaml, scaled to a short CPU run.
    return ["method=mlnt", f"mlnt.feature_checkpoint={ce_dir}", "mlnt.start_iter=10", "mlnt.mid_iter=30",
            "mlnt.ema_decay_rampup=0.9", "mlnt.ema_decay=0.97"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="digits, symmetric 50%% only, at the preset's 30 epochs (shorter runs are no verdict: "
                        "TCL's corrected targets need the warm-up of a third of the run)")
    p.add_argument("--datasets", default="digits,cifar10", help="comma-separated: digits, cifar10")
    p.add_argument("--methods", default="ce,tcl", help="comma-separated, ce first: ce, tcl, mlnt, dividemix, promix")
    p.add_argument("--digits-epochs", type=int, default=30)
    p.add_argument("--cifar-epochs", type=int, default=20)
    p.add_argument("--cifar-arch", default="tiny_cnn", help="model.arch on CIFAR-10 (tiny_cnn | preact_resnet18)")
    p.add_argument("--train-subset", type=int, default=2000, help="CIFAR-10 training images (class-balanced)")
    p.add_argument("--test-subset", type=int, default=1000, help="CIFAR-10 test images (class-balanced)")
    p.add_argument("--noise", default="", help="only these settings, e.g. symmetric:0.5,asymmetric:0.4")
    p.add_argument("--seeds", default="0", help="comma-separated seeds; the verdict is the mean gap over them")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override for every run (repeatable), e.g. data.augment_on=workers to compare "
                        "with rows measured on the per-sample CPU views")
    args = p.parse_args()
    if args.quick:
        args.datasets, args.noise = "digits", args.noise or "symmetric:0.5"
    methods = args.methods.split(",")
    seeds = [int(x) for x in args.seeds.split(",")]
    wanted = {(s.split(":")[0], float(s.split(":")[1])) for s in args.noise.split(",") if s}
    print_header("noise_accuracy: CE vs TCL at equal epochs" + (" (QUICK)" if args.quick else ""))

    rows, gaps, results = [], [], []
    for dataset in args.datasets.split(","):
        for noise_type, rate, base in settings(dataset, args):
            if wanted and (noise_type, rate) not in wanted:
                continue
            target = TARGET_GAP.get((noise_type, rate))
            setting = [dataset, f"{noise_type} {rate:.0%}"]
            target_cell = f"+{target:.0f}" if target else "-"
            setting_gaps: dict[str, list[float]] = {}
            for seed in seeds:
                for method, gap in run_setting(dataset, noise_type, rate, base, seed, methods, args, rows,
                                               results).items():
                    setting_gaps.setdefault(method, []).append(gap)
                    cell, judged = (target_cell, verdict(gap, target)) if method == "tcl" else ("-", "-")
                    gaps.append([*setting, seed, method, f"{gap:+.1f}", cell, judged])
            for method, values in setting_gaps.items():
                if len(values) > 1:
                    mean, sd = statistics.mean(values), statistics.stdev(values)
                    cell, judged = (target_cell, verdict(mean, target)) if method == "tcl" else ("-", "-")
                    gaps.append([*setting, f"mean of {len(values)}", method, f"{mean:+.1f} ± {sd:.1f}", cell, judged])
    print(markdown_table(["dataset", "noise", "method", "seed", "epochs", "test acc % (last)", "best %",
                          "detection AUC", "wall s"], rows))
    print()
    print(markdown_table(["dataset", "noise", "seed", "method", "method - CE (points, last epoch)", "target (TCL)",
                          "verdict"], gaps))
    out = OUT / "noise_accuracy.json"
    out.write_text(json.dumps(results, indent=1))


def verdict(gap: float, target: float | None) -> str:
    return "-" if target is None else ("met" if gap >= target else f"missed by {target - gap:.1f}")


def run_setting(dataset: str, noise_type: str, rate: float, base: list[str], seed: int, methods: list[str],
                args: argparse.Namespace, rows: list, results: list) -> dict[str, float]:
    """Train every method on one noise setting and seed; each other method's gap to CE in points."""
    acc: dict[str, float] = {}
    ce_dir = None
    epochs = args.digits_epochs if dataset == "digits" else args.cifar_epochs
    for method in methods:
        # Epochs in the name: a quick run does not overwrite a full-length one (seed 0 unsuffixed: the
        # path make bench hands to detection_vs_cleanlab).
        name = f"{dataset}_{noise_type}{int(rate * 100)}_e{epochs}_{method}" + (f"_s{seed}" if seed else "")
        run_dir = OUT / "noise_accuracy" / name
        try:
            wall, metrics = run_train(run_dir, [*base, f"seed={seed}", *method_args(method, ce_dir, epochs)],
                                      log=run_dir.parent / f"{name}.log")
        except RuntimeError as e:
            print(f"{name}: {e}", file=sys.stderr)
            rows.append([dataset, f"{noise_type} {rate:.0%}", method, seed, "failed", "", "", "", ""])
            continue
        if method == "ce":
            ce_dir = str(run_dir)
        last = metrics[-1]
        test_acc = last.get("test_acc", float("nan"))
        best = max(m.get("test_acc", 0.0) for m in metrics)
        auc = last.get("detection_auc")
        acc[method] = test_acc
        results.append({"dataset": dataset, "noise": noise_type, "rate": rate, "method": method, "seed": seed,
                        "epochs": last["epoch"], "test_acc": test_acc, "best_test_acc": best,
                        "detection_auc": auc, "wall_s": wall, "metrics": last})
        rows.append([dataset, f"{noise_type} {rate:.0%}", method, seed, last["epoch"], f"{100 * test_acc:.1f}",
                     f"{100 * best:.1f}", f"{auc:.3f}" if auc is not None else "-", f"{wall:.0f}"])
        print(f"  {name}: test_acc {test_acc:.4f} auc {auc} wall {wall:.0f}s", file=sys.stderr, flush=True)
    return {m: 100 * (a - acc["ce"]) for m, a in acc.items() if m != "ce"} if "ce" in acc else {}


if __name__ == "__main__":
    main()
