"""What a new user is told (issue 25): where the run computes (first log line), what it should take (the
estimate before epoch 1), notices only where they matter (the validation notice once, at the end; no
bitsandbytes import noise), audit refusing a wrong folder before creating anything, predict saying what
it converts, gallery tiles naming files, and the notebook's readable command echo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY, run_env, run_train
from PIL import Image
from sklearn.datasets import load_digits

from tcl_lite.cli.audit import main as audit_main
from tcl_lite.cli.predict import main as predict_main
from tcl_lite.config import load_config
from tcl_lite.engine import estimate, placement
from tcl_lite.engine.placement import resolve_augment_placement, thread_count
from tcl_lite.inference.predict import check_inputs, load_classifier, model_is_greyscale, predict
from tcl_lite.results.gallery import sample_name


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny digits run in its own process (what a user sees on the console), no validation split."""
    out = tmp_path_factory.mktemp("first_hour") / "run"
    proc = run_train(*TINY, f"output_dir={out}")
    return out, proc


def test_first_line_states_device_threads_workers_and_augmentation(tiny_run):
    out, proc = tiny_run
    first = proc.stdout.splitlines()[0]
    assert first == ("device cpu; 1 intra-op thread (OMP_NUM_THREADS=1); 0 data-loader workers (data.num_workers); "
                     "augmentation batched on the training device (cpu) (data.augment_on=auto: device)")
    logged = (out / "train.log").read_text().splitlines()
    assert logged[0].split(" ", 2)[2].startswith("$ ") and logged[1].endswith(first)  # after the command line
    assert "augment_on: device" in (out / "config.yaml").read_text()  # resolved once, kept for a resume


def test_validation_notice_only_once_in_the_summary(tiny_run):
    out, proc = tiny_run
    lines = proc.stdout.splitlines()
    first_epoch = next(i for i, line in enumerate(lines) if line.startswith("epoch 1/"))
    assert not any("validation" in line for line in lines[:first_epoch])
    assert sum("no validation split" in line for line in lines) == 1
    assert lines[-2].startswith("finished: 2 epochs") and lines[-1].startswith("no validation split, so no `best`")
    assert "data.val_fraction=0.1" in lines[-1]
    assert "pip install kernels" not in proc.stderr and "gemm_4bit" not in proc.stderr


def test_estimate_is_printed_before_the_first_epoch(tmp_path, fresh_accelerate, capsys, monkeypatch):
    from tcl_lite.engine import train

    monkeypatch.setattr(estimate, "SMALL_RUN_SAMPLES", 0)  # the digits are below the size that gets one
    monkeypatch.setattr(estimate, "CALIBRATION_SECONDS", 0.05)
    train(load_config(None, [*TINY, "train.epochs=1", "data.val_fraction=0.1", f"output_dir={tmp_path}"]))
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(("expected: about ", "expected: under ")))
    assert at < next(i for i, line in enumerate(lines) if line.startswith("epoch 1/"))
    assert " min/epoch, " in lines[at] and " GiB peak on this device (estimate: the plan's FLOPs at " in lines[at]
    assert not any("no validation split" in line for line in lines)  # a validation split: `best` is kept
    assert any(line.startswith("finished: 1 epochs") and "best = " in line for line in lines)


def test_bitsandbytes_import_is_quiet_and_the_filter_is_scoped():
    code = ("import logging; from tcl_lite.methods.build import _bitsandbytes_optim; assert _bitsandbytes_optim(); "
            "print(len(logging.getLogger('bitsandbytes.backends.cpu.ops').filters))")
    ours = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=run_env(), capture_output=True, text=True)
    assert ours.returncode == 0, ours.stderr
    assert "kernels" not in ours.stderr and ours.stdout.strip() == "0"  # silent, and no filter left behind


def test_threads_are_chosen_only_when_the_user_has_not():
    assert thread_count({"OMP_NUM_THREADS": "1"}, 1, 8, 8, 0.0, 1) == (None, "OMP_NUM_THREADS=1")
    assert thread_count({}, 3, 8, 8, 0.0, 1)[0] is None  # torch.set_num_threads(3) by the caller
    assert thread_count({}, 8, 8, 8, 1.0, 1)[0] == placement.MAX_THREADS  # idle 8 cores: capped
    assert thread_count({}, 8, 8, 8, 1.0, 2)[0] == 2  # 4 shared by two processes
    assert thread_count({}, 2, 2, 2, 11.0, 1)[0] == 1  # a loaded 2-core machine: one thread
    n, why = thread_count({}, 2, 2, 2, 1.0, 1)
    assert n == 2 and "OMP_NUM_THREADS=N chooses" in why


def test_augment_auto_follows_the_views_and_a_resumed_run_keeps_its_rule(tmp_path):
    cfg = load_config(None, ["method=tcl"])
    assert resolve_augment_placement(cfg, torch.device("cpu"), None) and cfg.data.augment_on == "device"
    ckpt = tmp_path / "step_1"
    ckpt.mkdir()
    (ckpt / "trainer.json").write_text(json.dumps({"settings": {"data.augment_on": "auto"}}))
    cfg = load_config(None, [])
    resolve_augment_placement(cfg, torch.device("cpu"), ckpt)  # recorded before auto covered the CPU
    assert cfg.data.augment_on == "workers"
    cfg = load_config(None, ["data.augment_on=workers"])
    assert not resolve_augment_placement(cfg, torch.device("cpu"), None) and cfg.data.augment_on == "workers"


def _class_folder(root: Path, names: tuple[str, ...], per_class: int = 3) -> None:
    digits = load_digits()
    for k, name in enumerate(names):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = np.round(digits.images[k * 10 + i] * 255 / 16).astype(np.uint8)
            Image.fromarray(image).save(root / name / f"{i}.png")


@pytest.mark.parametrize("case", ["missing", "empty class", "no class folders", "one class"])
def test_audit_refuses_a_wrong_folder_before_creating_anything(tmp_path, monkeypatch, capsys, case):
    monkeypatch.chdir(tmp_path)  # the default --out is runs/audit-<name> under the working directory
    folder = Path("my photos")
    if case == "empty class":
        _class_folder(folder, ("cat", "dog"))
        (folder / "bird").mkdir()
    elif case == "no class folders":
        folder.mkdir()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "a.png")
    elif case == "one class":
        _class_folder(folder, ("cat",))
    before = sorted(p for p in tmp_path.rglob("*"))
    assert audit_main([str(folder)]) == 2
    err = capsys.readouterr().err
    assert "my photos" in err and "audit_data" not in err, err
    assert {"empty class": "bird", "no class folders": "1 image lies directly in it",
            "one class": "at least two classes", "missing": "my photos"}[case] in err
    assert sorted(p for p in tmp_path.rglob("*")) == before and not (tmp_path / "runs").exists()


def test_predict_states_the_conversion_for_a_greyscale_model(tiny_run, tmp_path, capsys):
    out, _ = tiny_run
    model = load_classifier(str(out))
    assert model_is_greyscale(model)  # the digits: grey replicated into three channels
    rng = np.random.default_rng(0)
    colour = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8), "RGB").save(colour)
    grey = tmp_path / "photo_grey.png"
    with Image.open(colour) as img:
        img.convert("L").save(grey)
    notes = check_inputs(model, [str(colour), str(grey)])
    assert len(notes) == 2 and "1 colour image" in notes[0] and "converted to greyscale" in notes[0]
    assert "2 images not 8x8" in notes[1] and "30x20" in notes[1]
    probs = predict(model, [str(colour), str(grey)], device="cpu")
    assert np.array_equal(probs[0], probs[1])  # the colour photo is predicted as its greyscale version
    assert predict_main([str(out), str(colour), "--out", str(tmp_path / "p.csv")]) == 0
    printed = capsys.readouterr().out
    assert "predict: 1 colour image (e.g." in printed and "for a model trained on greyscale images" in printed


def test_gallery_tiles_name_the_file_relative_to_the_dataset_root():
    issues = SimpleNamespace(index=np.array([298, 5]), paths=[os.path.join("data", "train", "cat", "a.png"),
                                                              os.path.join("data", "train", "dog", "b" * 30 + ".png")],
                             root="data")
    assert sample_name(issues, 0) == os.path.join("train", "cat", "a.png")
    assert sample_name(issues, 1).startswith("…") and sample_name(issues, 1).endswith("bbb.png")
    assert sample_name(SimpleNamespace(index=np.array([298]), paths=None), 0) == "#298"  # tensors: no file


def test_notebook_echoes_the_command_readably():
    nb = json.loads((ROOT / "notebooks" / "tcl_lite_colab.ipynb").read_text())
    source = next("".join(c["source"]) for c in nb["cells"] if "def shown(" in "".join(c["source"]))
    block = source[source.index("def shown("):source.index("def stream(")]
    namespace: dict = {}
    exec("import shlex\n" + block, namespace)
    line = namespace["shown"](["python", "train.py", "train.mixed_precision='no'", "data.root=my data", "x=1"])
    assert line == "python train.py \"train.mixed_precision='no'\" 'data.root=my data' x=1"
