"""configs/clothing1m_mlnt.yaml against the public Clothing1M layout, on a tiny synthetic copy.

The release (as downloaded and extracted) is one folder: ``images/<d>/<dd>/<id>.jpg`` and the lists
``noisy_label_kv.txt`` (``path label``), ``noisy_train_key_list.txt`` (paths), ``clean_label_kv.txt``,
``clean_{train,val,test}_key_list.txt``, with paths such as ``images/0/61/2149790061.jpg``. The preset
reads it from ``./data/clothing1m``: the copy is made there, under a temporary working directory.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import ROOT, run_env, train_cmd
from PIL import Image

from tcl_lite.config import load_config
from tcl_lite.data import build_data

PRESET = ROOT / "configs" / "clothing1m_mlnt.yaml"


def make_release(base: Path) -> dict[str, Any]:
    """A Clothing1M-shaped folder with a few JPEGs; returns the path -> label tables."""
    rng = np.random.default_rng(0)
    root = base / "data" / "clothing1m"

    def image(i: int) -> str:
        rel = f"images/{i % 10}/{i % 100:02d}/{1000000 + i}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20 + i % 7, 16), (i * 37 % 256, i * 11 % 256, 90)).save(root / rel)
        return rel

    noisy = {image(i): int(rng.integers(14)) for i in range(40)}
    clean = {image(i): int(rng.integers(14)) for i in range(100, 124)}
    clean[next(iter(noisy))] = 5  # the release has images with both a noisy and a clean label
    keys = list(noisy)[::-1][:36]  # a key list in its own order, not every labelled image in it
    (root / "noisy_label_kv.txt").write_text("".join(f"{k} {v}\n" for k, v in noisy.items()))
    (root / "noisy_train_key_list.txt").write_text("".join(f"{k}\n" for k in keys))
    (root / "clean_label_kv.txt").write_text("".join(f"{k} {v}\n" for k, v in clean.items()))
    clean_keys = list(clean)
    for name, part in (("train", clean_keys[:8]), ("val", clean_keys[8:14]), ("test", clean_keys[14:])):
        (root / f"clean_{name}_key_list.txt").write_text("".join(f"{k}\n" for k in part))
    return {"noisy": noisy, "clean": clean, "keys": keys, "test_keys": clean_keys[14:]}


def test_preset_reads_the_release_layout(tmp_path, monkeypatch):
    tables = make_release(tmp_path)
    monkeypatch.chdir(tmp_path)  # the preset's paths are relative to the working directory
    cfg = load_config(PRESET, ["data.image_size=8"])
    b = build_data(cfg.data, cfg.seed)
    assert b.num_classes == 14 and b.true_labels is None, "14 classes, labels already noisy (noise_type none)"
    assert b.noisy_labels.tolist() == [tables["noisy"][k] for k in tables["keys"]]
    assert b.test.labels.tolist() == [tables["clean"][k] for k in tables["test_keys"]]
    assert len(b.train) == 36 and len(b.test) == len(tables["test_keys"]) == 11
    assert b.train[0]["image"].shape == (3, 8, 8)


def test_preset_trains_end_to_end_on_the_layout(tmp_path):
    """The preset with only the model made tiny and the GPU settings off: MLNT runs on the release layout."""
    make_release(tmp_path)
    tiny = ["model.arch=tiny_cnn", "model.pretrained=false", "model.width=8", "data.image_size=8",
            "data.num_workers=0", "train.batch_size=8", 'train.mixed_precision="no"',
            "train.activation_checkpointing=false", "train.eval_batch_size=64", "mlnt.feature_checkpoint=",
            "mlnt.start_iter=0", "mlnt.mid_iter=1", "mlnt.num_synthetic=2", "output_dir=run"]
    proc = subprocess.run(train_cmd("--config", str(PRESET), *tiny), cwd=tmp_path, env=run_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 36 // 8 and {"test_acc", "teacher_test_acc"} <= set(record)


def _imagenet_weights_reachable() -> bool:
    from tcl_lite.models.torchvision_resnet import hub_checkpoint_dir

    if os.path.isfile(os.path.join(hub_checkpoint_dir(), "resnet50-11ad3fa6.pth")):
        return True
    try:
        socket.create_connection(("download.pytorch.org", 443), timeout=3).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(_imagenet_weights_reachable(), reason="ImageNet weights cached or downloadable")
def test_preset_offline_without_imagenet_weights_stops_with_the_fix(tmp_path):
    make_release(tmp_path)
    proc = subprocess.run(train_cmd("--config", str(PRESET), 'train.mixed_precision="no"', "data.image_size=8",
                                    "output_dir=run"),
                          cwd=tmp_path, env=run_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    for words in ("model.pretrained=true", "resnet50-11ad3fa6.pth", "hub", "model.pretrained=false"):
        assert words in proc.stderr
