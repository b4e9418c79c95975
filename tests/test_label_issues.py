"""``tcl_lite.find_label_issues`` and ``tcl-lite issues``: rankings of real digits runs (40% symmetric
noise, true labels known) against chance, the CSV, the gallery PNG and the report's section."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, run_env
from PIL import Image

import tcl_lite
from tcl_lite.errors import RunError
from tcl_lite.results.gallery import gallery_grid, gallery_pixels

FAST = ["data.image_size=8", "model.width=8", "train.batch_size=32", "train.eval_batch_size=512",
        "train.log_every=1000", "optim.lr=0.4"]
# Precision@50 must beat a random ranking (whose precision is the noise rate, ~0.36) by this much.
MARGIN = {"ce": 0.3, "tcl": 0.5}


def _train(out, *overrides):
    from accelerate.state import AcceleratorState, GradientState

    from tcl_lite.config import load_config
    from tcl_lite.engine import train

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    train(load_config(None, [*FAST, *overrides, f"output_dir={out}"]))
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory, trustworthy_tcl):
    root = tmp_path_factory.mktemp("issues")
    # TCL: a run its own trust check calls trustworthy (conftest.TRUSTWORTHY_TCL). A tiny one (8 px, 5 epochs)
    # ranked by chance: its precision@50 moved between 0.38 and 0.68 with the number of threads.
    return {"ce": _train(root / "ce", "train.epochs=3"), "tcl": trustworthy_tcl}


@pytest.mark.parametrize("method", ["ce", "tcl"])
def test_ranking_beats_chance(runs, method):
    issues = tcl_lite.find_label_issues(runs[method])
    noisy = np.load(runs[method] / "noisy_labels.npy")
    true = np.load(runs[method] / "true_labels.npy")
    assert issues.method == method and len(issues) == len(noisy)
    if method == "tcl":  # the ranking the trust check vouches for
        assert issues.verdict.level == "trustworthy", issues.verdict.reasons
    assert sorted(issues.index.tolist()) == list(range(len(noisy)))
    assert np.array_equal(issues.given, noisy[issues.index]) and np.array_equal(issues.true, true[issues.index])
    assert np.all(np.diff(issues.score) <= 0) and 0 <= issues.score.min() and issues.score.max() <= 1
    chance = float((noisy != true).mean())
    precision = issues.precision_at(50)
    print(f"{method}: precision@50 {precision:.3f}, @100 {issues.precision_at(100):.3f}, chance {chance:.3f}")
    assert precision >= chance + MARGIN[method], (precision, chance)


def test_tcl_score_is_one_minus_clean_probability(runs, tmp_path):
    from tcl_lite.results.export import export

    issues = tcl_lite.find_label_issues(runs["tcl"])
    folder = export(runs["tcl"], tmp_path / "export_check")  # the shared run stays as trained
    w = np.load(folder / "clean_probability.npy")
    corrected = np.load(folder / "corrected_label.npy")
    assert np.allclose(issues.score, 1 - w[issues.index], atol=1e-7)
    assert np.array_equal(issues.suggested, corrected[issues.index])


def test_issues_command_writes_csv_gallery_and_report_section(runs, tmp_path):
    run = runs["ce"]
    top = 12
    proc = subprocess.run([sys.executable, "-m", "tcl_lite", "issues", str(run), "--top", str(top)], cwd=ROOT,
                          env=run_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(run / "issues" / "label_issues.csv") as f:
        rows = list(csv.DictReader(f))
    issues = tcl_lite.find_label_issues(run)
    assert len(rows) == len(issues) and [int(r["index"]) for r in rows[:50]] == issues.index[:50].tolist()
    assert set(rows[0]) >= {"rank", "index", "given_label", "given_name", "suggested_label", "suggested_name",
                            "score", "true_label"}
    summary = json.loads((run / "issues" / "summary.json").read_text())
    assert summary["shown_suspects"] == summary["shown_clean"] == top
    assert summary["precision_at_top"] == pytest.approx(issues.precision_at(top))
    # The gallery: two blocks of rows x cols thumbnails at a fixed pixel size.
    assert gallery_grid(top) == (2, 8)
    with Image.open(run / "issues" / "label_issues.png") as png:
        assert png.size == gallery_pixels(top) == (1360, 920)
    from tcl_lite.results.report import make_report

    report = make_report(run, tmp_path / "report")
    text = (report / "report.md").read_text()
    assert "![label issues](label_issues.png)" in text and (report / "label_issues.png").is_file()
    assert f"precision@50 **{summary['precision_at_50']:.3f}**" in text


def test_errors_name_the_problem(runs, tmp_path):
    with pytest.raises(RunError, match="no config.yaml"):
        tcl_lite.find_label_issues(tmp_path)
    with pytest.raises(RunError, match="kept no `best`"):
        tcl_lite.find_label_issues(runs["ce"], "best")
