"""Every bad input: a clear, early error (exit 2) that names the problem and the fix, losing nothing."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY, run_train

from tcl_lite.cli.train import main_train


def _labels(tmp_path, name, values):
    path = tmp_path / name
    np.save(path, np.asarray(values))
    return path


CASES = {
    "unknown key": (lambda t: ["train.epoch=3"], ["unknown config key 'train.epoch'", "train.epochs"]),
    "wrong type": (lambda t: ["train.batch_size=big"], ["'train.batch_size'", "expected int"]),
    "noise rate above 1": (lambda t: ["data.noise_rate=1.2"], ["'data.noise_rate'", "<= 1"]),
    "missing config file": (lambda t: ["--config", str(t / "nope.yaml")], ["nope.yaml", "does not exist"]),
    "fp16 on cpu": (lambda t: ["train.mixed_precision=fp16", "train.cpu=true"], ["fp16 needs a GPU", "bf16"]),
    "label file wrong length": (
        lambda t: ["data.noise_type=file", f"data.noise_file={_labels(t, 'short.npy', np.zeros(10, int))}"],
        ["short.npy", "1257", "10"]),
    "label out of range": (
        lambda t: ["data.noise_type=file", f"data.noise_file={_labels(t, 'big.npy', np.full(1257, 12))}"],
        ["big.npy", "12"]),
    "missing dataset folder": (
        lambda t: ["data.dataset=imagefolder", f"data.root={t / 'no_such_folder'}"], ["no_such_folder"]),
    "cifar offline": (
        lambda t: ["data.dataset=cifar10", f"data.root={t / 'cifar'}", "data.image_size=32"], ["data.root"]),
    "batch larger than the data": (lambda t: ["train.batch_size=4096"], ["'train.batch_size'", "exceeds"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_a_clear_error(case, tmp_path, capsys, fresh_accelerate):
    make_args, words = CASES[case]
    code = main_train([*TINY, f"output_dir={tmp_path / 'run'}", *make_args(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("tcl-lite train: error:")
    for w in words:
        assert w in err, f"{w!r} not in {err!r}"
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoints").exists(), "nothing is written before the error"


def test_existing_run_is_never_overwritten_and_corrupt_explicit_checkpoint_is_refused(tmp_path, capsys,
                                                                                   fresh_accelerate):
    out = tmp_path / "run"
    run_train(*TINY, "train.epochs=1", f"output_dir={out}")
    ckpt = sorted((out / "checkpoints").glob("step_*"))[-1]
    before = {p.name: p.read_bytes() for p in ckpt.iterdir()}

    # Both refusals come before anything is built: main_train in this process, as train.py calls it (the
    # exit status and stderr are the script's), saves two interpreter and torch start-ups.
    assert main_train([*TINY, "train.epochs=1", f"output_dir={out}"]) == 2
    err = capsys.readouterr().err
    assert "already holds checkpoints" in err and "--resume" in err

    (ckpt / "optimizer.json").write_text("{")  # corrupt: the manifest no longer matches
    assert main_train([*TINY, f"output_dir={tmp_path / 'other'}", "--resume", str(ckpt)]) == 2
    assert "optimizer.json is corrupt" in capsys.readouterr().err
    assert {p.name for p in ckpt.iterdir()} == set(before), "nothing saved was removed"
    assert (ckpt / "model.safetensors").read_bytes() == before["model.safetensors"]
