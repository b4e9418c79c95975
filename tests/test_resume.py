"""Never lose work: SIGKILL mid-epoch / at an epoch boundary, corrupt checkpoints, rolling saver."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ROOT, TINY, assert_same_weights, final_weights, run_env, run_train, train_cmd

EVERY = ["checkpoint.every_steps=5", "train.epochs=3"]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """The uninterrupted run every interrupted one must match."""
    out = tmp_path_factory.mktemp("uninterrupted")
    run_train(*TINY, *EVERY, f"output_dir={out}")
    return out


def _kill_when(out: Path, pattern: str, args: list[str]) -> None:
    """Start a real training process and SIGKILL it as soon as a checkpoint matching ``pattern`` exists."""
    proc = subprocess.Popen(train_cmd(*args, f"output_dir={out}"), cwd=ROOT, env=run_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if any(re.fullmatch(pattern, p.name) for p in (out / "checkpoints").glob("step_*")):
                proc.send_signal(signal.SIGKILL)
                break
            if proc.poll() is not None:
                raise AssertionError(f"finished before it could be killed: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.01)
        else:
            raise AssertionError("no checkpoint appeared")
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _resumed_at(stdout: str) -> tuple[int, int]:
    m = re.search(r"resumed from .* \(epoch (\d+), step (\d+) of the epoch", stdout)
    assert m, stdout[-2000:]
    return int(m.group(1)), int(m.group(2))


def test_sigkill_mid_epoch_then_resume_is_exact(reference_run, tmp_path):
    out = tmp_path / "killed"
    _kill_when(out, r"step_0000000[5-9]|step_000000[1-3]\d", [*TINY, *EVERY])
    proc = run_train(*TINY, *EVERY, f"output_dir={out}", "--resume")
    epoch, step = _resumed_at(proc.stdout)
    assert 0 < step < 39, "the kill should land inside an epoch"
    assert_same_weights(final_weights(out), final_weights(reference_run))
    # metrics of the epochs re-run after the resume are not duplicated
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]


def test_sigkill_at_epoch_boundary_then_resume_is_exact(reference_run, tmp_path):
    out = tmp_path / "killed"
    args = [*TINY, "train.epochs=3"]  # checkpoints only at epoch ends (39 steps each)
    _kill_when(out, r"step_00000039", args)
    proc = run_train(*args, f"output_dir={out}", "--resume")
    assert _resumed_at(proc.stdout)[1] == 0
    # every_steps only adds checkpoints: the trajectory is the same as the reference's
    assert_same_weights(final_weights(out), final_weights(reference_run))


def test_corrupt_newest_checkpoint_falls_back_and_stays_exact(reference_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference_run, out)  # a finished run of these settings: no need to train another
    steps = sorted((out / "checkpoints").glob("step_*"))
    assert len(steps) == 3, "the rolling saver keeps exactly checkpoint.keep_last (3)"
    newest, previous = steps[-1], steps[-2]
    blob = bytearray((newest / "model.safetensors").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (newest / "model.safetensors").write_bytes(bytes(blob))
    proc = run_train(*TINY, *EVERY, f"output_dir={out}", "--resume")
    assert f"skipping checkpoint {newest.name}" in proc.stdout and "corrupt" in proc.stdout
    assert f"resumed from {previous}" in proc.stdout
    assert_same_weights(final_weights(out), final_weights(reference_run))


def test_rolling_saver_keeps_exactly_keep_last_and_ignores_partial_saves(tmp_path):
    from accelerate import Accelerator

    from tcl_lite.checkpoints.reader import TrainerState
    from tcl_lite.checkpoints.writer import CheckpointManager

    acc = Accelerator(cpu=True)
    import torch

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    mgr = CheckpointManager(acc, tmp_path / "checkpoints", keep_last=2)
    for step in range(1, 6):
        mgr.save(f"step_{step:08d}", model, opt, {"w": torch.arange(3.0), "note": "x"},
                 TrainerState(global_step=step, step_in_epoch=step))
    assert [p.name for p in mgr.list_steps()] == ["step_00000004", "step_00000005"]
    # a save that died before its manifest: skipped, with the reason
    (tmp_path / "checkpoints" / "step_00000006").mkdir()
    messages: list[str] = []
    assert mgr.newest_valid(messages.append).name == "step_00000005"
    assert "no manifest.json" in messages[0]
    state, method_state = mgr.load(mgr.root / "step_00000005", model, opt)
    assert state.global_step == 5 and torch.equal(method_state["w"], torch.arange(3.0))
    assert method_state["note"] == "x"


def test_time_budget_stops_cleanly_and_resume_finishes_exactly(reference_run, tmp_path):
    out = tmp_path / "budget"
    proc = run_train(*TINY, *EVERY, f"output_dir={out}", "train.time_budget=1s")
    assert proc.returncode == 0
    assert "time budget" in proc.stdout and f"--resume --output-dir {out}" in proc.stdout
    metrics = out / "metrics.jsonl"
    assert not metrics.exists() or len(metrics.read_text().splitlines()) < 3, "stopped before the end"
    # The budget is per launch and kept in the run's config: relaunch until done, as on Kaggle.
    launches = 1
    while launches < 30:
        launches += 1
        proc = run_train(*TINY, *EVERY, f"output_dir={out}", "--resume")
        assert "resumed from" in proc.stdout
        if "Stopping after" not in proc.stdout:
            break
    assert "epoch 3/3: test_acc" in proc.stdout
    print(f"finished in {launches} launches")
    assert_same_weights(final_weights(out), final_weights(reference_run))


def test_sigterm_checkpoints_and_exits_zero(tmp_path):
    out = tmp_path / "term"
    proc = subprocess.Popen(train_cmd(*TINY, "train.epochs=50", f"output_dir={out}"), cwd=ROOT, env=run_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list((out / "checkpoints").glob("step_*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-2000:]
    assert "SIGTERM" in stdout and "--resume" in stdout
    newest = sorted((out / "checkpoints").glob("step_*"))[-1]
    state = json.loads((newest / "trainer.json").read_text())
    assert state["epoch"] < 50 and state["global_step"] > 0
