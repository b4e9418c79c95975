"""`python train.py` as a new user runs it: the embedded default learns through 40% label noise."""

from __future__ import annotations

import json

from conftest import run_train


def test_default_run_learns_well_above_chance(tmp_path):
    # The default config, shortened to 5 epochs for the test (the full 30 reach ~0.93; README).
    proc = run_train(f"output_dir={tmp_path}", "train.epochs=5")
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]
    assert {"epoch", "step", "test_acc"} <= set(records[-1])
    print(f"default run, 5 epochs: test_acc {records[-1]['test_acc']:.4f}")
    assert records[-1]["test_acc"] > 0.5, "chance is 0.1"
    assert "epoch 5/5: test_acc" in proc.stdout
    for name in ("config.yaml", "noisy_labels.npy", "true_labels.npy"):
        assert (tmp_path / name).is_file()
    import numpy as np

    noisy, true = np.load(tmp_path / "noisy_labels.npy"), np.load(tmp_path / "true_labels.npy")
    assert 0.3 < (noisy != true).mean() < 0.4, "40% resampled over 10 classes flips ~36%"
    # No validation split by default: nothing selects a `best` checkpoint (the test set never does).
    assert not (tmp_path / "checkpoints" / "best").exists() and "no validation split" in proc.stdout
