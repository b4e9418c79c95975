"""``python -m tcl_lite report RUN_DIR [--out DIR]``: figures, a Markdown summary and the cleaned labels of a run.

Writes to ``RUN_DIR/report/`` (or ``--out``):

- ``accuracy.png``: validation/test accuracy, the run's method's own metrics (its class's ``metric_labels``,
  e.g. TCL's kNN accuracy, MLNT's teacher accuracy) when logged, and train loss per epoch;
- ``clean_probability.png`` and ``cleaned_labels.csv``: the per-sample verdicts of a method that keeps
  them (its class overrides ``per_sample_outputs``; e.g. TCL), from the newest valid checkpoint
  through ``tcl_lite.results.export``; ``confusion.png`` too when the method gives a corrected (or
  a suggested) label per sample;
- ``noise_rate.png`` when the metrics log holds an estimated clean fraction;
- ``report.md``: the summary, with the figures embedded by relative path.

Only the run's files are read (``config.yaml``, ``metrics.jsonl``, the label ``.npy`` files and the
checkpoint's method state): no dataset, no model, no GPU. Runs of methods without per-sample verdicts
(CE, MLNT) get the accuracy figure and the summary only (the model's argmax over the training set would
need the dataset and a forward pass, and is not what "corrected label" means in TCL).
"""

from __future__ import annotations

import csv
import datetime as dt
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tcl_lite.checkpoints import schema
from tcl_lite.data.noise import CIFAR10_CLASSES
from tcl_lite.errors import CheckpointError, ConfigError, ExportError, ReportError
from tcl_lite.methods import get_method
from tcl_lite.results import plots
from tcl_lite.results.export import read_verdicts, verdict_methods, verdict_methods_text
from tcl_lite.runlog.metrics import read_metrics

CLEANED_COLUMNS = ("index", "given_label", "corrected_label", "clean_probability")  # a TCL run's
# A method's per-sample label columns the report draws and writes, in order of preference.
LABEL_COLUMNS = ("corrected_label", "suggested_label")
NEEDS_VERDICTS = ("The per-sample figures (clean probability, noise rate, confusion matrix) and `cleaned_labels.csv` "
                  "need a method that keeps a clean probability per training sample: {methods} (this run is method "
                  "`{method}`).")
# Epoch rows shown in report.md's metrics table; longer runs are thinned (the full log is metrics.jsonl).
MAX_TABLE_ROWS = 25



@dataclass
class PerSample:
    """A method's verdict per training sample, as exported from a checkpoint."""

    given: np.ndarray
    clean_probability: np.ndarray
    true: np.ndarray | None
    checkpoint: str
    label: np.ndarray | None = None  # the method's corrected (or suggested) label per sample
    label_column: str = ""  # which of LABEL_COLUMNS ``label`` is

    @property
    def label_words(self) -> str:
        """``corrected label`` / ``suggested label``."""
        return self.label_column.replace("_", " ")

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns of ``cleaned_labels.csv``."""
        return ("index", "given_label", *((self.label_column,) if self.label is not None else ()), "clean_probability")


def needs_verdicts(method: str) -> str:
    """The sentence of a report without per-sample verdicts, naming the methods that keep them."""
    return NEEDS_VERDICTS.format(method=method, methods=verdict_methods_text())


def keeps_verdicts(method: str) -> bool:
    return method in verdict_methods()


def method_metric_labels(method: str) -> dict[str, str]:
    """The run's method's ``metric_labels`` ({} for a method not registered in this process)."""
    try:
        return dict(get_method(method).metric_labels)
    except ConfigError:
        return {}


def _check_run_dir(run_dir: Path) -> None:
    expected = ("expected a run directory written by train.py, holding config.yaml and metrics.jsonl "
                "(e.g. runs/default after `python train.py`)")
    if not run_dir.exists():
        raise ReportError(f"{run_dir} does not exist: {expected}")
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir} is a file, not a directory: {expected}")
    missing = [name for name in ("config.yaml", "metrics.jsonl") if not (run_dir / name).is_file()]
    if missing:
        raise ReportError(f"{run_dir} holds no {' and no '.join(missing)}: {expected}")


def _load_config(run_dir: Path) -> dict[str, Any]:
    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ReportError(f"{run_dir / 'config.yaml'} cannot be read as YAML ({str(e)[:200]})") from None
    if not isinstance(cfg, dict):
        raise ReportError(f"{run_dir / 'config.yaml'} is not a mapping of config keys")
    return cfg


def class_names(cfg: dict[str, Any], num_classes: int) -> list[str]:
    """Names for the confusion matrix axes, from what the config says without reading any dataset."""
    data = cfg.get("data") or {}
    dataset = data.get("dataset")
    if dataset == "digits":
        return [str(k) for k in range(num_classes)]
    if dataset == "cifar10" and num_classes == 10:
        return list(CIFAR10_CLASSES)
    if dataset == "imagefolder":  # the folder's class names, in the sorted order the loader uses
        train = Path(str(data.get("root", "")), "train")
        if train.is_dir():
            names = sorted(p.name for p in train.iterdir() if p.is_dir())
            if len(names) == num_classes:
                return names
    return [str(k) for k in range(num_classes)]


def _per_sample(run_dir: Path) -> tuple[PerSample | None, str]:
    """The newest valid checkpoint's per-sample verdicts through ``export`` (which reads checkpoints
    safely), or None and the reason."""
    if not (run_dir / "checkpoints").is_dir():
        return None, f"{run_dir / 'checkpoints'} does not exist yet"

    try:
        verdicts = read_verdicts(run_dir)
        columns = verdicts.columns
        if "clean_probability" not in columns:
            raise ExportError(f"method {verdicts.method!r} gives no clean_probability per sample")
    except (ExportError, CheckpointError) as e:
        print(f"tcl_lite report: no per-sample figures: {e}", file=sys.stderr)
        return None, str(e)
    ckpt = verdicts.checkpoint
    label_column = next((c for c in LABEL_COLUMNS if c in columns), "")
    return PerSample(given=columns["given_label"], clean_probability=columns["clean_probability"],
                     true=columns.get("true_label"), label=columns.get(label_column), label_column=label_column,
                     checkpoint=str(ckpt.relative_to(run_dir) if ckpt.is_relative_to(run_dir) else ckpt)), ""


def write_cleaned_labels(s: PerSample, path: Path) -> Path:
    """One row per training sample: index, given_label[, corrected_label or suggested_label], clean_probability."""
    labels = s.label.tolist() if s.label is not None else None
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(s.columns)
        for i, (g, w) in enumerate(zip(s.given.tolist(), s.clean_probability.tolist())):
            own = [int(labels[i])] if labels is not None else []
            writer.writerow([i, int(g), *own, format(float(w), ".9g")])  # 9 digits round-trip a float32
    return path


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _best(records: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    rows = [r for r in records if r.get(key) is not None]
    return max(rows, key=lambda r: r[key]) if rows else None


def _last_with(records: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    rows = [r for r in records if r.get(key) is not None]
    return rows[-1] if rows else None


def _metrics_table(records: list[dict[str, Any]]) -> list[str]:
    skip = {"epoch", "step", "lr", "time", "clean_scale"}
    keys = [k for k in dict.fromkeys(k for r in records for k in r) if k not in skip]
    rows = records
    if len(rows) > MAX_TABLE_ROWS:  # keep the first, the last and evenly spaced ones in between
        idx = np.unique(np.linspace(0, len(rows) - 1, MAX_TABLE_ROWS).round().astype(int))
        rows = [rows[i] for i in idx]
    lines = ["| epoch | " + " | ".join(keys) + " |", "|---:" * (len(keys) + 1) + "|"]
    for r in rows:
        cells = [f"{r[k]:.4f}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys]
        lines.append(f"| {r.get('epoch', '')} | " + " | ".join(cells) + " |")
    return lines


def _change_summary(s: PerSample) -> list[str]:
    flagged = s.clean_probability < 0.5
    n = len(s.given)
    everything = f"{int(flagged.sum())} samples ({_pct(flagged.mean())}) are flagged noisy"
    if s.label is None:
        lines = [f"- {everything} (clean probability < 0.5)."]
        if s.true is not None:
            wrong = s.given != s.true
            hits = int((flagged & wrong).sum())
            lines.append(f"- Against the true labels: {hits} of the {int(flagged.sum())} flagged samples have a wrong "
                         f"label, and {hits} of the {int(wrong.sum())} wrong labels are flagged.")
        return lines
    changed = s.label != s.given
    words, changes = s.label_words, "changes" if s.label_column == "corrected_label" else "suggestions"
    lines = [f"- The {words} differs from the given one for **{int(changed.sum())} of {n}** training "
             f"samples ({_pct(changed.mean())}); **{int((changed & flagged).sum())}** of them are also flagged "
             f"noisy (clean probability < 0.5). {everything} in all."]
    if s.true is not None:
        wrong = s.given != s.true
        fixed = changed & wrong & (s.label == s.true)
        broken = changed & ~wrong
        lines.append(f"- Against the true labels: {int(fixed.sum())} {changes} fix a wrong label, {int(broken.sum())} "
                     f"change a correct one, {int((changed & wrong).sum() - fixed.sum())} replace a wrong label by "
                     f"another wrong one; the {words}s are {_pct((s.label == s.true).mean())} correct, "
                     f"the given ones {_pct((~wrong).mean())}.")
    return lines


# issues/summary.json (written by `tcl-lite issues`): the fields the report shows.
ISSUES_SUMMARY = schema.Record({"samples": schema.Int(ge=0), "method": schema.Str(), "checkpoint": schema.Str(),
                               "shown_suspects": schema.Int(ge=0), "top": schema.Int(ge=0),
                               "noise_rate": schema.Optional(schema.Num())}, extra=schema.Anything())


def label_issues_section(run_dir: Path, out_dir: Path) -> list[str]:
    """The gallery written by ``tcl-lite issues`` (copied next to report.md) and its precision@N."""
    import shutil

    gallery, summary = run_dir / "issues" / "label_issues.png", run_dir / "issues" / "summary.json"
    if not gallery.is_file() or not summary.is_file():
        return ["## Label issues", "", f"Run `tcl-lite issues {run_dir}` to rank every training label by how likely "
                "it is wrong and draw the gallery of the suspects; the report then embeds it.", ""]
    if out_dir.resolve() != gallery.parent.resolve():
        shutil.copyfile(gallery, out_dir / "label_issues.png")
    try:
        s = schema.read_checked(summary, ISSUES_SUMMARY)
    except schema.Invalid as e:
        raise ReportError(f"{run_dir / 'issues'}: {e}; run `tcl-lite issues {run_dir}` again") from None
    lines = ["## Label issues", "", f"{s['samples']} training samples ranked by `{s['method']}`'s score (checkpoint "
             f"`{Path(s['checkpoint']).name}`); the full ranking is `{run_dir / 'issues' / 'label_issues.csv'}`.", ""]
    if s.get("precision_at_top") is not None:
        ks = sorted(int(k.rsplit("_", 1)[1]) for k in s if k.startswith("precision_at_") and k[13:].isdigit())
        cells = ", ".join(f"precision@{k} **{s[f'precision_at_{k}']:.3f}**" for k in ks)
        lines += [f"- Against the true labels: {cells}, precision@{s['top']} {s['precision_at_top']:.3f}; a random "
                  f"ranking scores the noise rate, {s['noise_rate']:.3f}.", ""]
    return lines + ["![label issues](label_issues.png)", "", f"*The {s['shown_suspects']} most likely wrong labels "
                    "(given → suggested) and the labels the method trusts most.*", ""]


def _labels(path: Path) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        return schema.read_labels(path)
    except schema.Invalid as e:
        raise ReportError(f"{path.parent}: {e}") from None


def make_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the figures, ``report.md`` and (a method with per-sample verdicts) ``cleaned_labels.csv`` of a
    run; returns the report folder."""
    run_dir = Path(run_dir)
    _check_run_dir(run_dir)
    cfg = _load_config(run_dir)
    records = [r for r in read_metrics(run_dir / "metrics.jsonl") if "epoch" in r]
    if not records:
        raise ReportError(f"{run_dir / 'metrics.jsonl'} holds no evaluation yet: the report needs at least one "
                          "finished epoch (train longer, or resume the run)")
    out_dir = Path(out) if out else run_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    # a re-run must not show old files
    for stale in (*plots.FIGURE_PIXELS, "report.md", "cleaned_labels.csv", "label_issues.png"):
        (out_dir / stale).unlink(missing_ok=True)

    method = str(cfg.get("method", "unknown"))
    given, true = (_labels(run_dir / name) for name in ("noisy_labels.npy", "true_labels.npy"))
    true_rate = float((given != true).mean()) if given is not None and true is not None else None
    keeps = keeps_verdicts(method)
    samples, why_not = _per_sample(run_dir) if keeps else (None, "")
    figures = _draw_figures(run_dir, cfg, records, out_dir, samples, true_rate)
    if samples is not None:
        write_cleaned_labels(samples, out_dir / "cleaned_labels.csv")

    name = run_dir.resolve().name
    lines = [f"# tcl_lite report: {name}", "",
             f"Run directory `{run_dir}`, {len(records)} evaluations; generated "
             f"{dt.datetime.now().isoformat(timespec='seconds')} by `python -m tcl_lite report`.", "",
             *_summary_table(cfg, records, given, true_rate), ""]
    if samples is not None:
        lines += ["## Labels", "", f"From checkpoint `{samples.checkpoint}`; one row per training sample in "
                  f"[`cleaned_labels.csv`](cleaned_labels.csv) ({', '.join(samples.columns)}).", "",
                  *_change_summary(samples), ""]
    elif keeps:
        lines += ["## Labels", "", f"The per-sample figures and `cleaned_labels.csv` are skipped: {why_not}.", ""]
    else:
        lines += ["## Labels", "", needs_verdicts(method), ""]

    lines += label_issues_section(run_dir, out_dir)
    lines += ["## Figures", ""]
    for file, caption in figures:
        lines += [f"![{Path(file).stem}]({file})", "", f"*{caption}*", ""]
    lines += ["## Metrics per epoch", "", *_metrics_table(records), "",
              "The full log is `metrics.jsonl` in the run directory.", ""]
    (out_dir / "report.md").write_text("\n".join(lines))
    return out_dir


def _draw_figures(run_dir: Path, cfg: dict[str, Any], records: list[dict[str, Any]], out_dir: Path,
                  samples: PerSample | None, true_rate: float | None) -> list[tuple[str, str]]:
    """Every figure the run's files allow, as (file name, caption)."""
    method, data = str(cfg.get("method", "unknown")), cfg.get("data") or {}
    figures: list[tuple[str, str]] = []
    plots.plot_accuracy(records, out_dir, title=f"{run_dir.resolve().name}: {method} on {data.get('dataset', '?')}",
                        method=method)
    figures.append(("accuracy.png", "Test accuracy (and the method's other accuracies) and training loss per epoch."))
    if samples is not None:
        clean = samples.given == samples.true if samples.true is not None else None
        plots.plot_clean_probability(samples.clean_probability, clean, out_dir, xlabel=f"clean probability ({method})")
        figures.append(("clean_probability.png", f"`{method}`'s clean probability per training sample"
                        + (", truly clean vs truly noisy labels." if clean is not None else ".")))
    if any("est_clean_fraction" in r for r in records):  # from the metrics log: needs no checkpoint
        plots.plot_noise_rate(records, true_rate, out_dir)
        figures.append(("noise_rate.png", "Estimated noise rate per epoch"
                        + (" vs the true noise rate." if true_rate is not None else ".")))
    if samples is not None and samples.label is not None:
        seen = int(max(samples.given.max(), samples.label.max(),
                       samples.true.max() if samples.true is not None else 0)) + 1
        # a class nobody is labelled or corrected to would otherwise be missing from the matrix
        known = {"digits": 10, "cifar10": 10, "cifar100": 100}.get(str(data.get("dataset")), 0)
        num_classes = max(seen, known, int(data.get("num_classes") or 0))
        plots.plot_confusion(samples.given, samples.label, samples.true, class_names(cfg, num_classes), out_dir,
                             label=f"{samples.label_words} ({method})")
        which = samples.label_column.split("_")[0].capitalize()
        figures.append(("confusion.png", f"{which} (by `{method}`) vs given labels"
                        + (" and vs true labels." if samples.true is not None else ".")))
    return figures


def _summary_table(cfg: dict[str, Any], records: list[dict[str, Any]], given: np.ndarray | None,
                   true_rate: float | None) -> list[str]:
    """The table at the top of report.md: the run's settings and its headline numbers."""
    method = str(cfg.get("method", "unknown"))
    data, train_cfg = cfg.get("data") or {}, cfg.get("train") or {}
    last, best = records[-1], _best(records, "test_acc")
    lines = ["| | |", "|---|---|",
             f"| method | `{method}` |",
             f"| dataset | `{data.get('dataset', '?')}` at {data.get('image_size', '?')} px"
             + (f", {len(given)} training samples" if given is not None else "") + " |",
             f"| label noise | `{data.get('noise_type', '?')}`, data.noise_rate={data.get('noise_rate', '?')}"
             + (f" (true noise rate {_pct(true_rate)})" if true_rate is not None else "") + " |",
             f"| model | `{(cfg.get('model') or {}).get('arch', '?')}` |",
             f"| epochs | {last.get('epoch')} of {train_cfg.get('epochs', '?')} evaluated (step {last.get('step')}) |",
             f"| final test accuracy | {_pct(last.get('test_acc'))} (epoch {last.get('epoch')}) |",
             f"| best test accuracy | {_pct(best['test_acc']) if best else 'n/a'}"
             + (f" (epoch {best['epoch']})" if best else "") + " |"]
    best_val = _best(records, "val_acc")
    if best_val:  # the validation split is what selected checkpoints/best
        lines.append(f"| best validation accuracy (noisy labels; selects `best`) | {_pct(best_val['val_acc'])} "
                     f"(epoch {best_val['epoch']}; test accuracy there {_pct(best_val.get('test_acc'))}) |")
    for key, label in method_metric_labels(method).items():  # the method's own metrics
        row = _last_with(records, key)
        if row:
            lines.append(f"| final {label} | {_pct(row[key])} (epoch {row['epoch']}) |")
    det = _last_with(records, "detection_auc") or _last_with(records, "detection_acc")
    if det:
        auc = det.get("detection_auc")
        lines.append(f"| noise detection AUC / accuracy | {'n/a' if auc is None else f'{auc:.3f}'} / "
                     f"{_pct(det.get('detection_acc'))} (epoch {det['epoch']}) |")
    est = _last_with(records, "est_clean_fraction")
    if est:
        lines.append(f"| estimated vs true noise rate | {_pct(1 - est['est_clean_fraction'])} vs "
                     f"{_pct(true_rate) if true_rate is not None else 'unknown (no true labels)'} "
                     f"(epoch {est['epoch']}) |")
    elif true_rate is not None:
        lines.append(f"| true noise rate | {_pct(true_rate)} |")
    return lines
