"""Fault injection (issue 13): what an unlucky user or an adversary does to a run must never lose or
corrupt it. Every case ends in a clear error that changed nothing, or in a correct fallback."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY, free_port, run_env, run_train, train_cmd
from PIL import Image
from safetensors.torch import load_file

from tcl_lite.cli.train import main_train, parse_train_args, resolve_config
from tcl_lite.config import load_config

# 480 samples / 32 = 15 steps per epoch; one epoch, checkpoints at steps 5, 10, 15
FAST = [*TINY, "data.train_subset=480", "train.epochs=1", "checkpoint.every_steps=5"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    run_train(*FAST, f"output_dir={out}")
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "run"
    shutil.copytree(run, dest)
    return dest


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file's bytes and every folder (None), by relative path."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")}


def _rewrite(ckpt: Path, name: str, data: bytes | None) -> None:
    """Replace (or, with None, unlist) a file of a checkpoint and keep its manifest consistent, as an
    adversary or a faulty sync tool would: the checksums then all match."""
    import hashlib

    manifest = json.loads((ckpt / "manifest.json").read_text())
    if data is None:
        manifest.pop(name)
    else:
        (ckpt / name).write_bytes(data)
        manifest[name] = hashlib.sha256(data).hexdigest()
    (ckpt / "manifest.json").write_text(json.dumps(manifest))


def _strict_records(path: Path) -> list[dict]:
    def refuse(token: str) -> None:
        raise ValueError(f"{token} is not JSON")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def _steps(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").glob("step_*"))


# -- 1. every checkpoint unusable: refused, byte-identical; --restart moves aside -----------------

def test_every_checkpoint_unusable_is_refused_leaving_the_directory_byte_identical(finished_run, tmp_path, capsys,
                                                                                   fresh_accelerate):
    run = _copy(finished_run, tmp_path)
    s05, s10, s15 = (run / "checkpoints" / n for n in _steps(run))
    blob = bytearray((s15 / "model.safetensors").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (s15 / "model.safetensors").write_bytes(bytes(blob))  # a bit flip
    (s10 / "manifest.json").unlink()  # a save (or a sync) that never finished
    _rewrite(s05, "trainer.json", json.dumps({"epoch": 0, "step_in_epoch": 5, "global_step": -5}).encode())
    before = _snapshot(run)

    assert main_train([*FAST, f"output_dir={run}", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "none is usable" in err and "--restart" in err and "Traceback" not in err
    assert "step_00000015: model.safetensors is corrupt" in err
    assert "step_00000010: no manifest.json" in err
    assert "step_00000005: trainer.json: global_step=-5" in err
    assert _snapshot(run) == before, "a refused resume changed the run directory"

    assert main_train([*FAST, f"output_dir={run}", "--restart"]) == 0
    aside = [p for p in run.iterdir() if p.name.startswith("previous-")]
    assert len(aside) == 1 and f"moved the previous files of {run}" in capsys.readouterr().out
    assert _snapshot(aside[0]) == before, "--restart moves the old run aside, byte for byte"
    assert _steps(run) == ["step_00000005", "step_00000010", "step_00000015"]


# -- 2. integrity: incomplete manifest, bad counters, unreadable safetensors -> fallback ------------

def _three_checkpoints(root: Path):
    from accelerate import Accelerator

    from tcl_lite.checkpoints.reader import TrainerState
    from tcl_lite.checkpoints.writer import CheckpointManager

    acc = Accelerator(cpu=True)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    mgr = CheckpointManager(acc, root, keep_last=3)
    for step in (10, 20, 30):  # epochs of 8 steps
        epoch, in_epoch = divmod(step, 8)
        mgr.save(f"step_{step:08d}", model, opt, {"w": torch.arange(3.0)},
                 TrainerState(epoch=epoch, step_in_epoch=in_epoch, global_step=step, epoch_steps=[8] * epoch))
    return mgr, model, opt


def _trainer_json(**changes) -> bytes:
    return json.dumps({"epoch": 2, "step_in_epoch": 5, "global_step": 30, "num_processes": 1, **changes}).encode()


def _bad_safetensors_header(ckpt: Path) -> bytes:
    blob = bytearray((ckpt / "model.safetensors").read_bytes())
    blob[8:16] = b"{not-js}"  # the JSON header right after its 8-byte length
    return bytes(blob)


FALLBACK_CASES = {
    # name: (how the newest checkpoint is damaged, words of the warning, found by verify or by load)
    "manifest lacks the optimizer": (lambda c: _rewrite(c, "optimizer.json", None),
                                     ["does not list optimizer.json"], "verify"),
    "manifest lacks an RNG file": (lambda c: _rewrite(c, "rng_rank0.safetensors", None),
                                   ["does not list rng_rank0.safetensors"], "verify"),
    "negative step": (lambda c: _rewrite(c, "trainer.json", _trainer_json(global_step=-3, step_in_epoch=0, epoch=0)),
                      ["global_step=-3"], "verify"),
    "step not a number": (lambda c: _rewrite(c, "trainer.json", _trainer_json(epoch="2")), ["epoch='2'"], "verify"),
    "name and step disagree": (lambda c: _rewrite(c, "trainer.json", _trainer_json(global_step=31)),
                               ["global_step=31 but the folder is step_00000030"], "verify"),
    "JSON does not parse": (lambda c: _rewrite(c, "method.json", b"{\"t\": "), ["method.json is not valid JSON"],
                            "verify"),
    "step beyond the epoch": (lambda c: _rewrite(c, "trainer.json", _trainer_json(step_in_epoch=9, global_step=30)),
                              ["step_in_epoch=9", "8 steps"], "load"),
    "safetensors header damaged": (lambda c: _rewrite(c, "model.safetensors", _bad_safetensors_header(c)),
                                   ["model.safetensors: not a safetensors file"], "verify"),
}


@pytest.mark.parametrize("case", list(FALLBACK_CASES))
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(case, tmp_path, fresh_accelerate):
    damage, words, found_by = FALLBACK_CASES[case]
    mgr, model, opt = _three_checkpoints(tmp_path / "checkpoints")
    newest = mgr.root / "step_00000030"
    damage(newest)
    messages: list[str] = []
    first = mgr.newest_valid(messages.append)
    assert first.name == ("step_00000020" if found_by == "verify" else "step_00000030")
    path, state, method_state = mgr.load_with_fallback(first, model, opt, messages.append, steps_per_epoch=8)
    assert path.name == "step_00000020" and state.global_step == 20
    assert torch.equal(method_state["w"], torch.arange(3.0))
    assert len(messages) == 1 and "step_00000030" in messages[0], messages
    for w in words:
        assert w in messages[0], messages[0]


def test_a_damaged_manifest_falls_back_end_to_end(finished_run, tmp_path, capsys, fresh_accelerate):
    run = _copy(finished_run, tmp_path)
    _rewrite(run / "checkpoints" / "step_00000015", "rng_rank0.safetensors", None)
    assert main_train([*FAST, f"output_dir={run}", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "skipping checkpoint step_00000015" in out and "rng_rank0.safetensors" in out
    assert f"resumed from {run / 'checkpoints' / 'step_00000010'}" in out


# -- 3. non-finite loss ----------------------------------------------------------------------------

def test_nan_loss_stops_at_the_step_keeping_the_last_good_checkpoint_newest(tmp_path, capsys, fresh_accelerate):
    out = tmp_path / "nan"
    # epoch 2 multiplies the lr by 1e8: the loss becomes NaN a few steps into it
    code = main_train([*TINY, "data.train_subset=480", "optim.schedule=step", "optim.milestones=[1]",
                       "optim.gamma=1e8", f"output_dir={out}"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "non-finite loss at optimizer step" in err and "(epoch 2, step" in err, err
    assert "loss=nan" in err or "loss=inf" in err
    assert "optim.lr" in err and "train.nonfinite=skip" in err and "Traceback" not in err
    assert _steps(out) == ["step_00000015"], "nothing is saved after the NaN"
    assert "newest checkpoint is step_00000015" in err
    weights = load_file(str(out / "checkpoints" / "step_00000015" / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    assert [r["epoch"] for r in _strict_records(out / "metrics.jsonl")] == [1]


def test_nonfinite_skip_skips_and_counts_the_step(tmp_path, monkeypatch, fresh_accelerate):
    from tcl_lite.methods.ce import method as ce

    original = ce.CrossEntropy.loss

    def loss(self, batch, info):  # one poisoned step, as a batch of NaN images would give
        value, terms = original(self, batch, info)
        return (value * float("nan") if info.global_step == 4 else value), terms

    monkeypatch.setattr(ce.CrossEntropy, "loss", loss)
    out = tmp_path / "skip"
    assert main_train([*FAST, "train.nonfinite=skip", f"output_dir={out}"]) == 0
    (record,) = _strict_records(out / "metrics.jsonl")
    assert record["nonfinite_steps"] == 1 and math.isfinite(record["train_loss"])
    state = json.loads((out / "checkpoints" / "step_00000015" / "trainer.json").read_text())
    assert state["nonfinite_steps"] == 1 and state["global_step"] == 15


def test_metrics_file_is_strict_json(tmp_path):
    from tcl_lite.runlog.metrics import MetricsLog

    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.append({"epoch": 1, "train_loss": float("nan"), "x": [float("inf"), 1.0]})
    assert _strict_records(log.path) == [{"epoch": 1, "train_loss": None, "x": [None, 1.0]}]


# -- 4. one writer ---------------------------------------------------------------------------------

def _wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"ended before {what}: {proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, capsys, fresh_accelerate):
    out = tmp_path / "busy"
    first = subprocess.Popen(train_cmd(*TINY, "train.epochs=50", f"output_dir={out}"), cwd=ROOT, env=run_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: (out / "config.yaml").exists(), first, "the first writer's start")
        assert (out / ".lock").read_text().split()[0] == str(first.pid)
        config = (out / "config.yaml").read_bytes()
        assert main_train([*TINY, "train.epochs=50", "train.batch_size=16", f"output_dir={out}", "--resume"]) == 2
        assert f"in use by another training process (PID {first.pid}" in capsys.readouterr().err
        assert (out / "config.yaml").read_bytes() == config, "the refused writer wrote nothing"
        assert (out / ".lock").read_text().split()[0] == str(first.pid)
    finally:
        first.send_signal(signal.SIGTERM)  # the clean stop: it checkpoints and exits 0
        first.wait(timeout=120)
    assert first.returncode == 0 and not (out / ".lock").exists()


def test_ranks_exit_when_their_launcher_is_killed(tmp_path):
    psutil = pytest.importorskip("psutil")
    if shutil.which("accelerate") is None:
        pytest.skip("accelerate CLI not on PATH")
    out = tmp_path / "orphans"
    env = dict(run_env(), ACCELERATE_USE_CPU="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), str(ROOT / "train.py"),
           *TINY, "train.batch_size=16", "train.epochs=50", "checkpoint.every_steps=5", f"output_dir={out}"]
    launcher = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ranks = []
    try:
        _wait_for(lambda: _steps(out), launcher, "the first checkpoint", timeout=240)
        children = psutil.Process(launcher.pid).children(recursive=True)
        ranks = [p for p in children if "train.py" in " ".join(p.cmdline())]
        assert len(ranks) == 2, [p.cmdline() for p in ranks]
        launcher.kill()  # kill -9: the launcher cannot forward anything to its ranks
        launcher.wait()
        gone, alive = psutil.wait_procs(ranks, timeout=10)
        assert not alive, f"ranks still running 10 s after their launcher died: {[p.pid for p in alive]}"
        written = _snapshot(out / "checkpoints")
        time.sleep(1.0)
        assert _snapshot(out / "checkpoints") == written
    finally:
        launcher.kill()
        for p in ranks:  # only if the test failed: never leave a rank behind
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()


# -- 5. numbers as a user types them ----------------------------------------------------------------

@pytest.mark.parametrize("text, value", [("1e-3", 1e-3), ("1E6", 1e6), (".5", 0.5), ("5.", 5.0), ("2.5e-4", 2.5e-4),
                                         ("1e+2", 100.0), ("3", 3.0)])
def test_yaml_1_2_floats_parse_on_the_command_line_and_in_a_preset(text, value, tmp_path):
    args = parse_train_args([f"optim.lr={text}", "--output-dir", str(tmp_path / "run"), f"optim.weight_decay={text}"])
    cfg = resolve_config(args)
    assert cfg.optim.lr == value and isinstance(cfg.optim.lr, float) and cfg.optim.weight_decay == value
    preset = tmp_path / "preset.yaml"
    preset.write_text(f"optim:\n  lr: {text}\n  min_lr_ratio: {text if value <= 1 else 0.5}\n"
                      f"checkpoint:\n  every_steps: 1e3\n")
    cfg = load_config(preset)
    assert cfg.optim.lr == value and isinstance(cfg.optim.lr, float)
    assert cfg.checkpoint.every_steps == 1000 and isinstance(cfg.checkpoint.every_steps, int)


def test_non_finite_and_non_numbers_are_still_refused():
    from tcl_lite.errors import ConfigError

    for bad in ("optim.lr=.inf", "optim.lr=1e-3x", "train.epochs=2.5"):
        with pytest.raises(ConfigError, match="optim.lr|train.epochs"):
            load_config(None, [bad])


# -- 6. early data checks, unwritable output, full disk ------------------------------------------

def _image_folder(root: Path) -> Path:
    for split in ("train", "test"):
        for k, cls in enumerate(("a", "b")):
            (root / split / cls).mkdir(parents=True)
            for i in range(6):
                Image.new("RGB", (12, 12), (40 * k + i, 9 * i, 100)).save(root / split / cls / f"{i}.png")
    (root / "train" / "a" / "zero.jpg").write_bytes(b"")
    good = (root / "train" / "b" / "0.png").read_bytes()
    (root / "test" / "b" / "cut.png").write_bytes(good[: len(good) // 2])  # truncated mid-stream
    return root


def test_a_corrupt_image_is_reported_before_the_output_directory_exists(tmp_path, capsys, fresh_accelerate):
    data = _image_folder(tmp_path / "images")
    out = tmp_path / "run"
    code = main_train([*TINY, "data.dataset=imagefolder", f"data.root={data}", "train.batch_size=4",
                       "data.noise_type=none", f"output_dir={out}"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "2 of 26 images" in err and "zero.jpg: empty file" in err and "cut.png" in err
    assert "data.verify_images=0" in err and "Traceback" not in err
    assert not out.exists(), "the run directory is created only after the data checks"


def test_an_unwritable_output_directory_is_a_clear_error(tmp_path, capsys, fresh_accelerate):
    if os.geteuid() != 0:
        parent = tmp_path / "read_only"
        parent.mkdir(mode=0o555)
    elif Path("/sys").is_dir() and sys.platform.startswith("linux"):
        parent = Path("/sys")  # root writes anywhere but in sysfs
    else:  # pragma: no cover
        pytest.skip("running as root without a read-only folder to write to")
    out = parent / "tcl_lite_run"
    code = main_train([*FAST, f"output_dir={out}"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"cannot write the run directory {out}" in err and "MiB" in err and "--output-dir" in err


def test_a_full_disk_is_a_clear_error_before_training_and_at_a_save(tmp_path, capsys, fresh_accelerate, monkeypatch):
    import tcl_lite.checkpoints.writer as checkpoint
    import tcl_lite.engine.run_guard as run_guard

    out = tmp_path / "full"
    real = shutil.disk_usage
    monkeypatch.setattr(run_guard.shutil, "disk_usage", lambda p: real(p)._replace(free=4096))
    assert main_train([*FAST, f"output_dir={out}"]) == 2
    err = capsys.readouterr().err
    assert "not enough free space for a checkpoint" in err and str(out) in err and "MiB" in err
    assert not (out / "checkpoints").exists()

    monkeypatch.setattr(run_guard.shutil, "disk_usage", real)
    real_save = checkpoint.save_file

    def fills_up(tensors, path):
        if ".tmp-step_00000010" in str(path):  # the second checkpoint hits a full disk
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(tensors, path)

    monkeypatch.setattr(checkpoint, "save_file", fills_up)
    out2 = tmp_path / "fills"
    assert main_train([*FAST, f"output_dir={out2}"]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "step_00000010" in err and "MiB" in err and "--resume" in err, err
    assert _steps(out2) == ["step_00000005"] and not list((out2 / "checkpoints").glob(".tmp-*"))


# -- 7. resuming on other data --------------------------------------------------------------------

def test_resuming_with_changed_data_settings_is_refused_naming_each_key(finished_run, tmp_path, capsys,
                                                                       fresh_accelerate):
    run = _copy(finished_run, tmp_path)
    before = _snapshot(run)
    assert main_train([f"output_dir={run}", "--resume", "data.noise_rate=0.2", "seed=3"]) == 2
    err = capsys.readouterr().err
    assert "data.noise_rate: 0.4 -> 0.2" in err and "seed: 0 -> 3" in err and "--allow-data-change" in err
    fingerprint = json.loads((run / "data_fingerprint.json").read_text())
    fingerprint["noisy_labels_sha256"] = "0" * 64  # same keys, other label files
    (run / "data_fingerprint.json").write_text(json.dumps(fingerprint))
    before["data_fingerprint.json"] = (run / "data_fingerprint.json").read_bytes()
    assert main_train([f"output_dir={run}", "--resume"]) == 2
    assert "training labels built now differ" in capsys.readouterr().err
    assert _snapshot(run) == before


def test_resuming_with_other_normalisation_constants_is_refused(finished_run, tmp_path, capsys, fresh_accelerate):
    """A run trained with other mean/std than the config now gives (e.g. from before data.normalization=auto
    picked a method's reference constants): refused before anything is written, naming the fix."""
    run = _copy(finished_run, tmp_path)
    info = json.loads((run / "data.json").read_text())
    info["std"] = [0.2023, 0.1994, 0.2010]
    (run / "data.json").write_text(json.dumps(info))
    before = _snapshot(run)
    assert main_train([f"output_dir={run}", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "normalised with mean" in err and "data.normalization=dataset" in err and "--allow-data-change" in err
    assert _snapshot(run) == before


# -- 8. SIGTERM while starting up ------------------------------------------------------------------

_TERM_DURING_DATA = """
import os, signal, sys
from tcl_lite.engine import trainer
original = trainer.build_data
def build_data(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)  # the platform stops the session while the data loads
    return original(*args, **kwargs)
trainer.build_data = build_data
from tcl_lite.cli.train import main_train
sys.exit(main_train(sys.argv[1:]))
"""


def test_sigterm_during_start_up_takes_the_clean_stop_path(tmp_path):
    out = tmp_path / "term"
    proc = subprocess.run([sys.executable, "-c", _TERM_DURING_DATA, *FAST, f"output_dir={out}"], cwd=ROOT,
                          env=run_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Stopping before the first step" in proc.stdout and "--resume" in proc.stdout
    assert _steps(out) == [] and not (out / ".lock").exists()
