"""The validation split: held out from the (noisy) training set or given by the user; it alone selects
`best`, the test set is only reported, and a dataset without a test split trains."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from tcl_lite.config import DataConfig, load_config
from tcl_lite.data import build_data
from tcl_lite.errors import ConfigError, DataError

TINY = ["data.image_size=8", "model.width=8", "train.batch_size=32", "train.eval_batch_size=512",
        "train.log_every=1000", "data.noise_type=none", "data.dataset=imagefolder"]


def digit_folder(root: Path, digits: tuple[int, ...], splits: dict[str, tuple[int, int]],
                 swap_test: bool = False) -> Path:
    """PNG folders of scikit-learn digits: ``splits[name] = (first, last)`` sample rank per class.
    ``swap_test``: the test/ images of the two classes are filed under each other's folder, so test
    accuracy is exactly 1 - the model's true accuracy on them."""
    d = load_digits()
    for split, (lo, hi) in splits.items():
        for k, digit in enumerate(digits):
            folder_class = digits[1 - k] if swap_test and split == "test" else digit
            folder = root / split / f"digit{folder_class}"
            folder.mkdir(parents=True, exist_ok=True)
            for i, idx in enumerate(np.flatnonzero(d.target == digit)[lo:hi]):
                Image.fromarray((d.images[idx] * 255 / 16).astype(np.uint8)).save(folder / f"{i}.png")
    return root


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_val_fraction_is_stratified_seeded_and_carries_the_noisy_labels():
    cfg = DataConfig(val_fraction=0.2, noise_rate=0.4)
    full, a, b = build_data(DataConfig(noise_rate=0.4), 0), build_data(cfg, 0), build_data(cfg, 0)
    assert len(a.val) == math.ceil(0.2 * len(full.train)) and len(a.train) + len(a.val) == len(full.train)
    assert np.array_equal(a.val.labels, b.val.labels) and np.array_equal(a.noisy_labels, b.noisy_labels)
    # Stratified by the noisy labels: every class's share of the validation set is within one sample.
    counts = np.bincount(full.noisy_labels, minlength=10)
    assert np.abs(np.bincount(a.val.labels, minlength=10) - 0.2 * counts).max() <= 1
    # Validation labels are the noisy ones: together with the training part they are the full noisy set.
    assert np.array_equal(np.sort(np.concatenate([a.noisy_labels, a.val.labels])), np.sort(full.noisy_labels))
    assert len(a.true_labels) == len(a.train) and (a.true_labels != a.noisy_labels).mean() > 0.2
    assert not np.array_equal(build_data(cfg, 1).val.labels, a.val.labels)


def test_test_metrics_cannot_select_and_a_given_val_split_excludes_a_fraction(tmp_path):
    with pytest.raises(ConfigError, match="test set.*val_acc"):
        load_config(None, ["checkpoint.best_metric=test_acc"])
    root = digit_folder(tmp_path / "f", (0, 1), {"train": (0, 20), "val": (20, 25)})
    with pytest.raises(DataError, match="val_fraction=0.2.*val/ folder"):
        build_data(DataConfig(dataset="imagefolder", root=str(root), val_fraction=0.2), 0)
    b = build_data(DataConfig(dataset="imagefolder", root=str(root), image_size=8, noise_type="none"), 0)
    assert b.test is None and len(b.val) == 10 and len(b.train) == 40


def test_best_checkpoint_follows_validation_not_test(tmp_path, fresh_accelerate):
    """Constructed so that test accuracy is 1 - true accuracy (test/ folders swapped): it peaks where
    validation accuracy is lowest. `best` must be the argmax of val_acc all the same."""
    from tcl_lite.engine import train

    root = digit_folder(tmp_path / "data", (3, 8), {"train": (0, 150), "test": (150, 174)}, swap_test=True)
    out = tmp_path / "run"
    train(load_config(None, [*TINY, f"data.root={root}", "data.val_fraction=0.3", "train.epochs=5",
                             "optim.lr=0.01", "model.head=linear", f"output_dir={out}"]))
    rows = records(out)
    val = [r["val_acc"] for r in rows]
    best_val, best_test = int(np.argmax(val)), int(np.argmax([r["test_acc"] for r in rows]))
    assert best_val != best_test, f"construction failed: val {val}, test {[r['test_acc'] for r in rows]}"
    saved = json.loads((out / "checkpoints" / "best" / "trainer.json").read_text())
    assert saved["best_step"] == rows[best_val]["step"] and saved["best_value"] == val[best_val]
    assert saved["metrics"]["val_acc"] == max(val)
    from tcl_lite.results.report import make_report

    text = (make_report(out) / "report.md").read_text()
    assert f"| best validation accuracy (noisy labels; selects `best`) | {100 * max(val):.1f}% (epoch {best_val + 1};" \
        in text


def test_a_folder_without_test_split_trains(tmp_path, fresh_accelerate):
    from tcl_lite.engine import train

    root = digit_folder(tmp_path / "data", (0, 1, 2), {"train": (0, 40), "val": (40, 50)})
    out = tmp_path / "run"
    train(load_config(None, [*TINY, f"data.root={root}", "method=tcl", "train.epochs=2", "tcl.knn_k=10",
                             f"output_dir={out}"]))
    rows = records(out)
    assert [r["epoch"] for r in rows] == [1, 2] and all("test_acc" not in r and "knn_acc" not in r for r in rows)
    assert all(0 <= r["val_acc"] <= 1 for r in rows) and (out / "checkpoints" / "best").is_dir()
    info = json.loads((out / "data.json").read_text())
    assert info["class_names"] == ["digit0", "digit1", "digit2"] and info["sizes"] == {"train": 120, "val": 30,
                                                                                      "test": 0}


def test_file_lists_take_a_val_list_and_no_test_list(tmp_path):
    root = digit_folder(tmp_path / "f", (0, 1), {"train": (0, 6), "val": (6, 8)})
    for split in ("train", "val"):
        lines = [f"{p.relative_to(root)} {int(p.parent.name[-1])}" for p in sorted((root / split).rglob("*.png"))]
        (tmp_path / f"{split}.txt").write_text("\n".join(lines) + "\n")
    cfg = load_config(None, ["data.dataset=filelist", f"data.root={root}", f"data.train_list={tmp_path / 'train.txt'}",
                             f"data.val_list={tmp_path / 'val.txt'}", "data.image_size=8", "data.noise_type=none"])
    b = build_data(cfg.data, 0)
    assert b.test is None and len(b.train) == 12 and b.val.labels.tolist() == [0, 0, 1, 1]
    with pytest.raises(ConfigError, match="data.val_list.*filelist"):
        load_config(None, [f"data.val_list={tmp_path / 'val.txt'}"])
