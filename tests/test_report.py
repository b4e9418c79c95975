"""``python -m tcl_lite report``: on a real tiny TCL run (trained here), on a CE run, and on bad paths. (A full
run's trustworthy ``cleaned_labels.csv``: tests/test_trust.py.)"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, run_env, run_side_by_side
from PIL import Image

from tcl_lite.algorithms.trust_files import load_trust
from tcl_lite.results import plots
from tcl_lite.results.report import CLEANED_COLUMNS, make_report, needs_verdicts

FAST = ["data.image_size=8", "model.width=8", "train.batch_size=64", "train.eval_batch_size=512",
        "train.log_every=1000"]
PER_SAMPLE = ("clean_probability.png", "noise_rate.png", "confusion.png")


def report_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tcl_lite", "report", *args], cwd=ROOT, env=run_env(),
                          capture_output=True, text=True, timeout=300)


def assert_png(path: Path) -> None:
    assert path.stat().st_size > 0, path
    with Image.open(path) as image:
        image.verify()  # a complete, readable PNG
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == plots.FIGURE_PIXELS[path.name], (path.name, image.size)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A TCL and a CE run, trained side by side (one core each)."""
    out = {"tcl": tmp_path_factory.mktemp("report_tcl"), "ce": tmp_path_factory.mktemp("report_ce")}
    run_side_by_side([*FAST, "method=tcl", "train.epochs=2", "tcl.warmup_epochs=1", f"output_dir={out['tcl']}"],
                     [*FAST, "train.epochs=1", f"output_dir={out['ce']}"])
    return out


@pytest.fixture(scope="module")
def tcl_run(runs) -> tuple[Path, Path]:
    proc = report_cli(str(runs["tcl"]))
    assert proc.returncode == 0, proc.stderr
    return runs["tcl"], runs["tcl"] / "report"


@pytest.fixture(scope="module")
def ce_run(runs) -> Path:
    return runs["ce"]


def _records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _label_file(run: Path) -> str:
    """The label file the run's trust verdict allows: every sample (trustworthy) or the changes to review."""
    return "cleaned_labels.csv" if load_trust(run).level == "trustworthy" else "review_labels.csv"


def test_tcl_report_writes_every_figure_at_its_size(tcl_run):
    _, report = tcl_run
    for name in ("accuracy.png", *PER_SAMPLE):
        assert_png(report / name)


def test_tcl_report_md_embeds_the_figures_and_the_numbers(tcl_run):
    run, report = tcl_run
    text = (report / "report.md").read_text()
    for name in ("accuracy.png", *PER_SAMPLE):
        assert f"]({name})" in text, name  # embedded by relative path: the folder can be moved
    assert f"]({_label_file(run)})" in text
    assert text.splitlines()[2].startswith(f"## Trust verdict: **{load_trust(run).level}**")
    last = _records(run)[-1]
    assert "| method | `tcl` |" in text and "`digits`" in text and "`symmetric`" in text
    assert f"| final test accuracy | {100 * last['test_acc']:.1f}% (epoch 2) |" in text
    assert f"{last['detection_auc']:.3f}" in text
    noisy, true = np.load(run / "noisy_labels.npy"), np.load(run / "true_labels.npy")
    assert f"{100 * (1 - last['est_clean_fraction']):.1f}% vs {100 * (noisy != true).mean():.1f}%" in text
    assert "The corrected label differs from the given one for" in text


def test_label_file_matches_the_run(tcl_run):
    run, report = tcl_run
    from tcl_lite.checkpoints.state_io import load_tree

    state = load_tree(sorted((run / "checkpoints").glob("step_*"))[-1], "method")
    noisy = np.load(run / "noisy_labels.npy")
    corrected, w = state["corrected_label"].numpy(), state["clean_probability"].numpy()
    with open(report / _label_file(run), newline="") as f:
        rows = list(csv.DictReader(f))
    if _label_file(run) == "cleaned_labels.csv":
        assert tuple(rows[0]) == CLEANED_COLUMNS
        index = np.array([int(r["index"]) for r in rows])
        assert index.tolist() == list(range(len(noisy)))
    else:  # the proposed changes, most confident first
        assert tuple(rows[0]) == ("rank", "index", "given_label", "corrected_label", "confidence",
                                  "clean_probability")
        index = np.array([int(r["index"]) for r in rows])
        assert sorted(index.tolist()) == np.flatnonzero(corrected != noisy).tolist()
        confidence = [float(r["confidence"]) for r in rows]
        assert confidence == sorted(confidence, reverse=True) and all(0 <= c <= 1 for c in confidence)
    # the same values as the newest checkpoint's TCL state (read the way export reads it)
    assert np.array_equal([int(r["given_label"]) for r in rows], noisy[index])
    assert np.array_equal([int(r["corrected_label"]) for r in rows], corrected[index])
    assert np.allclose([float(r["clean_probability"]) for r in rows], w[index], rtol=0, atol=1e-7)


def test_report_out_folder_and_rerun(tcl_run, tmp_path):
    run, _ = tcl_run
    out = make_report(run, tmp_path / "elsewhere")
    assert out == tmp_path / "elsewhere"
    assert {p.name for p in out.iterdir()} == {"accuracy.png", *PER_SAMPLE, "report.md", _label_file(run)}
    assert make_report(run, out) == out  # running again overwrites in place


def test_ce_report_has_accuracy_and_the_skip_sentence(ce_run):
    proc = report_cli(str(ce_run))
    assert proc.returncode == 0, proc.stderr
    report = ce_run / "report"
    assert_png(report / "accuracy.png")
    text = (report / "report.md").read_text()
    assert "](accuracy.png)" in text
    assert needs_verdicts("ce") in text and "method=tcl" in text
    for name in (*PER_SAMPLE, "cleaned_labels.csv", "review_labels.csv"):
        assert not (report / name).exists(), name


@pytest.mark.parametrize("kind", ["missing", "empty", "file", "no_metrics"])
def test_bad_path_exits_2_naming_it_and_what_is_expected(kind, tmp_path):
    path = tmp_path / "run"
    if kind == "empty":
        path.mkdir()
    elif kind == "file":
        path.write_text("x")
    elif kind == "no_metrics":  # a run that has not finished an epoch yet
        path.mkdir()
        (path / "config.yaml").write_text("method: tcl\n")
        (path / "metrics.jsonl").write_text("")
    proc = report_cli(str(path))
    assert proc.returncode == 2
    assert proc.stderr.startswith("tcl-lite report: error: ") and str(path) in proc.stderr
    assert "Traceback" not in proc.stderr
    expected = "no evaluation yet" if kind == "no_metrics" else "config.yaml and metrics.jsonl"
    assert expected in proc.stderr


def test_plots_without_true_labels_and_with_many_classes(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.random(500)
    assert_png(plots.plot_clean_probability(w, None, tmp_path))
    assert_png(plots.plot_noise_rate([{"epoch": 1, "est_clean_fraction": 0.6}], None, tmp_path))
    given, corrected = rng.integers(0, 100, 2000), rng.integers(0, 100, 2000)
    assert_png(plots.plot_confusion(given, corrected, None, [str(k) for k in range(100)], tmp_path))
    assert plots.confusion_counts(np.array([0, 1, 1]), np.array([1, 1, 0]), 2).tolist() == [[0, 1], [1, 1]]
