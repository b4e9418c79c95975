"""Issue 23: no path overwrites, strands or misreports a run. One test per failure the issue found, each
first seen failing on the code before the fix: forks, checkpoints that parse but lie, signals, silent
changes on resume, leftovers. (Damaged files given by path: tests/test_paths.py; the schema fuzz:
tests/test_schema_fuzz.py.)"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import (
    ROOT,
    SMALL,
    TINY,
    assert_same_weights,
    final_weights,
    free_port,
    rewrite,
    run_env,
    snapshot,
    train_cmd,
)

from tcl_lite.checkpoints.reader import sha256
from tcl_lite.cli.train import main_train
from tcl_lite.runlog.run_status import read_status


def _copy(run: Path, tmp_path: Path, name: str = "run") -> Path:
    dest = tmp_path / name
    shutil.copytree(run, dest)
    return dest


def _ckpt(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step_{step:08d}"


def _steps(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


# -- 1. a finished run overwritten by a resume of another run; a fork that ignored the parent's config ----

def test_resuming_another_run_into_a_full_directory_is_refused_and_restart_moves_it_aside(
        small_run, tmp_path, capsys, fresh_accelerate):
    other = _copy(small_run, tmp_path, "other")  # NEW holds a finished run
    before_parent, before_other = snapshot(small_run), snapshot(other)
    assert main_train(["--resume", str(small_run), "--output-dir", str(other)]) == 2
    err = capsys.readouterr().err
    assert f"{other} is not empty" in err and "--restart" in err and "Traceback" not in err
    assert snapshot(other) == before_other and snapshot(small_run) == before_parent

    assert main_train(["--resume", str(_ckpt(small_run, 25)), "--output-dir", str(other), "--restart"]) == 0
    aside = [p for p in other.iterdir() if p.name.startswith("previous-")]
    assert len(aside) == 1 and snapshot(aside[0]) == before_other, "the old run is moved aside, byte for byte"
    parent = json.loads((other / "parent.json").read_text())
    assert parent["checkpoint_name"] == "step_00000025" and parent["global_step"] == 25
    assert read_status(other)["state"] == "finished" and read_status(other)["step"] == 30
    assert snapshot(small_run) == before_parent, "the parent run is only read"


def test_a_fork_of_a_mid_epoch_checkpoint_finishes_bit_identical_and_leaves_the_parent_untouched(
        small_run, tmp_path, capsys, fresh_accelerate):
    before = snapshot(small_run)
    fork = tmp_path / "fork"
    mid_epoch = _ckpt(small_run, 20)  # epoch 2, step 5 of 15
    assert json.loads((mid_epoch / "trainer.json").read_text())["step_in_epoch"] == 5
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the small run was trained (OMP_NUM_THREADS=1): the same kernels, bit for bit
    try:  # no --config and no overrides: the fork takes the parent's config.yaml, not the default config's model
        assert main_train(["--resume", str(mid_epoch), "--output-dir", str(fork)]) == 0
    finally:
        torch.set_num_threads(threads)
    stdout = capsys.readouterr().out
    assert f"resumed from {mid_epoch}" in stdout and f"forked {mid_epoch} (global step 20) into {fork}" in stdout
    assert_same_weights(final_weights(fork), final_weights(small_run))
    parent = json.loads((fork / "parent.json").read_text())
    assert parent["run_dir"] == str(small_run.resolve()) and parent["checkpoint"] == str(mid_epoch.resolve())
    assert parent["manifest_sha256"] == sha256(mid_epoch / "manifest.json") and parent["global_step"] == 20
    assert [json.loads(x)["epoch"] for x in (fork / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert snapshot(small_run) == before, "the original run directory is byte-identical"


# -- 2. checkpoints that parse but lie -------------------------------------------------------------

def test_counters_that_contradict_each_other_fall_back_instead_of_reporting_finished(
        small_run, tmp_path, capsys, fresh_accelerate):
    run = _copy(small_run, tmp_path)
    for step in (15, 20, 25, 30):  # a run a third trained: its newest checkpoint is step 10 of 30
        shutil.rmtree(_ckpt(run, step))
    trainer = json.loads((_ckpt(run, 10) / "trainer.json").read_text())
    trainer["epoch"] = 2  # "both epochs done", re-hashed into the manifest
    rewrite(_ckpt(run, 10), "trainer.json", json.dumps(trainer).encode())
    assert main_train(["--output-dir", str(run), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "skipping checkpoint step_00000010" in out and "trainer.json: epoch=2 but epoch_steps" in out
    assert f"resumed from {_ckpt(run, 5)}" in out
    status = read_status(run)
    assert status["state"] == "finished" and status["step"] == 30, "trained to the end, not declared finished"


def test_an_optimizer_file_of_the_wrong_structure_falls_back_naming_the_field(
        small_run, tmp_path, capsys, fresh_accelerate):
    run = _copy(small_run, tmp_path)
    optimizer = json.loads((_ckpt(run, 30) / "optimizer.json").read_text())
    optimizer["param_groups"][0]["params"] = 7  # torch.optim: "TypeError: object of type int has no len()"
    rewrite(_ckpt(run, 30), "optimizer.json", json.dumps(optimizer).encode())
    assert main_train(["--output-dir", str(run), "--resume", "train.epochs=3"]) == 0
    out = capsys.readouterr().out
    assert "skipping checkpoint step_00000030" in out and "optimizer.json: param_groups[0].params" in out
    assert f"resumed from {_ckpt(run, 25)}" in out and read_status(run)["step"] == 45


# -- 3. signals ----------------------------------------------------------------------------------

def _catches(pid: int, sig: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    mask = int(next(line.split()[1] for line in text.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(mask & (1 << (sig - 1)))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_sigterm_at_the_first_instruction_is_a_clean_stop(tmp_path):
    out = tmp_path / "term"
    proc = subprocess.Popen(train_cmd(*SMALL, f"output_dir={out}"), cwd=ROOT, env=run_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not _catches(proc.pid, signal.SIGTERM) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    torch_loaded = "libtorch" in Path(f"/proc/{proc.pid}/maps").read_text()
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    assert not torch_loaded, "the handler exists before the heavy imports"
    assert proc.returncode == 0, stderr[-2000:]
    assert "Stopping before the first step (SIGTERM during start-up)" in stdout
    assert read_status(out)["state"] == "stopped_signal" and not list((out / "checkpoints").glob("step_*"))


def test_ctrl_c_saves_a_checkpoint_and_exits_zero(tmp_path, capsys, fresh_accelerate):
    out = tmp_path / "int"

    def interrupt() -> None:  # what a terminal's Ctrl-C and a notebook's interrupt send, once a checkpoint exists
        while not list((out / "checkpoints").glob("step_*")):
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    assert main_train([*TINY, "data.train_subset=480", "train.epochs=50", f"output_dir={out}"]) == 0
    stdout = capsys.readouterr().out
    assert "(on SIGINT (Ctrl-C))" in stdout and "--resume" in stdout
    status = read_status(out)
    newest = sorted((out / "checkpoints").glob("step_*"))[-1]
    assert status["state"] == "stopped_signal" and status["epoch"] < 50
    assert json.loads((newest / "trainer.json").read_text())["global_step"] == status["step"] > 0
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "Ctrl-C is the caller's again"


def test_a_second_ctrl_c_stops_at_once():
    from tcl_lite import signals

    with signals.handled():
        os.kill(os.getpid(), signal.SIGINT)
        assert signals.stop_requested() == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs in this thread before the sleep ends
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "the previous handler is back"


def _ranks(launcher_pid: int) -> list[int]:
    from tcl_lite.cli.launch import _children

    return [pid for pid in _children(launcher_pid) if "tcl_lite" in Path(f"/proc/{pid}/cmdline").read_text()]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_launch_with_two_gloo_processes_exits_0_after_a_clean_stop_and_2_after_a_refusal(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "tcl_lite", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           str(free_port()), "--", *TINY, "data.train_subset=480", "train.batch_size=16",
           "train.epochs=50", "checkpoint.every_steps=5", f"output_dir={out}"]
    env = dict(run_env(), ACCELERATE_USE_CPU="1")
    launcher = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not list((out / "checkpoints").glob("step_*")) and launcher.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint"
            time.sleep(0.05)
        assert len(_ranks(launcher.pid)) == 2, "two training processes"
        launcher.send_signal(signal.SIGTERM)
        stdout, stderr = launcher.communicate(timeout=240)
    finally:
        launcher.kill()
    assert launcher.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr and "(on SIGTERM)" in stdout and "tcl-lite launch" in stdout
    newest = sorted((out / "checkpoints").glob("step_*"))[-1]
    assert json.loads((newest / "trainer.json").read_text())["num_processes"] == 2
    assert {"rng_rank0.json", "rng_rank1.json"} <= {p.name for p in newest.iterdir()}
    assert read_status(out)["state"] == "stopped_signal"

    refused = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)  # no --resume
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "already holds checkpoints" in refused.stderr and "refused to start (exit 2)" in refused.stderr
    assert "Traceback" not in refused.stderr


# -- 5. changes on resume are stated --------------------------------------------------------------

def test_lowering_epochs_below_the_position_is_refused_naming_it(small_run, tmp_path, capsys, fresh_accelerate):
    run = _copy(small_run, tmp_path)
    before = snapshot(run)
    assert main_train(["--output-dir", str(run), "--resume", "train.epochs=1"]) == 2
    err = capsys.readouterr().err
    assert "'train.epochs': 1 is below where" in err and "2 completed epochs (global step 30)" in err
    assert "train.epochs >= 2" in err and snapshot(run) == before


def test_a_batch_size_change_on_resume_is_refused_unless_allowed_and_then_logged(
        small_run, tmp_path, capsys, fresh_accelerate):
    run = _copy(small_run, tmp_path)
    before = snapshot(run)
    assert main_train(["--output-dir", str(run), "--resume", "train.batch_size=16", "train.epochs=3"]) == 2
    err = capsys.readouterr().err
    assert "train.batch_size: 32 -> 16" in err and "--allow-config-change" in err and snapshot(run) == before

    assert main_train(["--output-dir", str(run), "--resume", "train.batch_size=16", "train.epochs=3",
                       "--allow-config-change"]) == 0
    assert "config change on resume: train.batch_size: 32 -> 16" in (run / "train.log").read_text()
    assert {"key": "train.batch_size", "from": 32, "to": 16, "step": 30} in read_status(run)["config_changes"]
    assert read_status(run)["step"] == 30 + 480 // 16, "the third epoch ran with the new batch size"


# -- 6. leftovers -----------------------------------------------------------------------------------

def test_a_start_refused_for_lack_of_space_creates_nothing(tmp_path, capsys, fresh_accelerate, monkeypatch):
    import tcl_lite.engine.run_guard as run_guard

    real = shutil.disk_usage
    monkeypatch.setattr(run_guard.shutil, "disk_usage", lambda p: real(p)._replace(free=4096))
    out = tmp_path / "new" / "run"
    assert main_train([*SMALL, f"output_dir={out}"]) == 2
    assert "not enough free space" in capsys.readouterr().err
    assert not (tmp_path / "new").exists(), "a refused start leaves no folder behind"


def test_interrupted_renames_are_completed_or_rolled_back_with_a_line_in_the_log(
        small_run, tmp_path, capsys, fresh_accelerate):
    run = _copy(small_run, tmp_path)
    ckpts = run / "checkpoints"
    newest = snapshot(_ckpt(run, 30))
    os.replace(_ckpt(run, 30), ckpts / ".tmp-step_00000030")  # written in full; the rename never happened
    shutil.copytree(_ckpt(run, 25), ckpts / ".old-step_00000025")  # replaced; the old copy never removed
    shutil.copytree(_ckpt(run, 25), ckpts / ".tmp-step_00000035")
    (ckpts / ".tmp-step_00000035" / "manifest.json").unlink()  # a save that never finished
    (run / ".tmp-data_fingerprint.json").write_text("{")
    assert main_train(["--output-dir", str(run), "--resume"]) == 0
    log = (run / "train.log").read_text()
    for line in ("completed the save of step_00000030", "removed .old-step_00000025",
                 "removed the unfinished save .tmp-step_00000035", "removed .tmp-data_fingerprint.json"):
        assert line in log, line
    assert _steps(run) == [f"step_{s:08d}" for s in (5, 10, 15, 20, 25, 30)]
    assert snapshot(_ckpt(run, 30)) == newest and f"resumed from {_ckpt(run, 30)}" in capsys.readouterr().out
    assert not [p for p in run.iterdir() if p.name.startswith(".tmp-")]

