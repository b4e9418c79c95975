"""``tcl-lite export-model`` / ``tcl_lite.load_model`` round-trip exactly, and ``tcl-lite predict`` on image
files gives what the exported model computes in-process (and the run's own test accuracy)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, run_env
from PIL import Image
from safetensors.torch import load_file
from sklearn.datasets import load_digits

import tcl_lite
from tcl_lite.inference.export_model import classifier_from_run, export_model
from tcl_lite.inference.predict import predict


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from accelerate.state import AcceleratorState, GradientState

    from tcl_lite.config import load_config
    from tcl_lite.engine import train

    out = tmp_path_factory.mktemp("pe") / "run"
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    train(load_config(None, ["data.image_size=8", "model.width=8", "train.batch_size=32", "optim.lr=0.4",
                             "train.epochs=2", "train.log_every=1000", "data.val_fraction=0.1", f"output_dir={out}"]))
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    return out


def test_export_round_trips_exactly(run, tmp_path):
    out = export_model(run, tmp_path / "model")  # auto: the best checkpoint (the run has a validation split)
    model = tcl_lite.load_model(out)
    ckpt = load_file(str(run / "checkpoints" / "best" / "model.safetensors"))
    state = model.state_dict()
    assert set(state) == {k for k in ckpt if not k.startswith("projector.")}
    assert all(torch.equal(state[k], ckpt[k]) for k in state)
    meta = json.loads((out / "model.json").read_text())
    assert meta["class_names"] == [str(k) for k in range(10)] and meta["image_size"] == 8
    assert meta["source"]["checkpoint"] == "best"
    # The same logits as the run's network (built through the run's config) on the run's test set.
    from tcl_lite.inference.run_loading import choose_checkpoint, load_network, run_config, run_data

    cfg = run_config(run)
    data = run_data(run, cfg)
    net = load_network(cfg, choose_checkpoint(run, "best"), 10, 8)
    x = torch.stack([data.test[i]["image"] for i in range(64)])
    with torch.no_grad():
        assert torch.equal(model(x), net(x).logits)
    with pytest.raises(FileExistsError, match="already holds"):
        export_model(run, out)


def test_predict_equals_the_exported_model_in_process(run, tmp_path):
    digits = load_digits()
    folder = tmp_path / "images"
    folder.mkdir()
    picks = [1700, 1701, 1702, 1703, 1750, 1790]
    for i in picks:
        # Stored the way the digits are prepared for training (0..16 scaled to 0..255, rounded).
        pixels = np.round(digits.images[i] * 255 / 16).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"digit_{i}.png")
    out_csv = tmp_path / "preds.csv"
    proc = subprocess.run([sys.executable, "-m", "tcl_lite", "predict", str(run), str(folder), "--out", str(out_csv),
                           "--top-k", "3", "--batch-size", "4"], cwd=ROOT, env=run_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(out_csv) as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == sorted(str(folder / f"digit_{i}.png") for i in picks)
    model = tcl_lite.load_model(export_model(run, tmp_path / "model"))
    # In-process, without the CLI: the exported model on the same tensors the training pipeline makes.
    from tcl_lite.data.datasets import FileImages

    images = FileImages([r["path"] for r in rows], model.image_size)
    with torch.no_grad():
        probs = model(torch.stack([model.transform(images[i]) for i in range(len(rows))])).softmax(dim=1).numpy()
    assert [int(r["predicted_label"]) for r in rows] == probs.argmax(1).tolist()
    assert [r["predicted_class"] for r in rows] == [model.class_names[k] for k in probs.argmax(1)]
    assert np.allclose([float(r["probability"]) for r in rows], probs.max(1), rtol=1e-5)
    assert all(len(r["top3"].split("; ")) == 3 for r in rows)
    assert np.allclose(predict(model, [r["path"] for r in rows], batch_size=2), probs, atol=1e-6)


def test_run_and_export_agree_with_the_logged_test_accuracy(run, tmp_path):
    """The final checkpoint's exported model scores the test accuracy the run logged at its last epoch."""
    from tcl_lite.inference.run_loading import run_config, run_data

    model = tcl_lite.load_model(export_model(run, tmp_path / "final", checkpoint="final"))
    data = run_data(run, run_config(run))
    x = torch.stack([data.test[i]["image"] for i in range(len(data.test))])
    with torch.no_grad():
        acc = float((model(x).argmax(1).numpy() == data.test.labels).mean())
    logged = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["test_acc"]
    assert acc == pytest.approx(logged, abs=1e-9)
    assert classifier_from_run(run, "final").meta["source"]["checkpoint"].startswith("step_")
