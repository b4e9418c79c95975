"""Shared test helpers: tiny configurations and running train.py as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Before torch is imported (libgomp reads it once): the threads of an in-process test's OpenMP pool sleep
# when idle instead of spinning. The pool size, and so every result, is unchanged; but on a shared or busy
# machine (the train.py subprocesses of other tests, a second suite) spinning threads starved the working
# ones: the 8 tiny in-process epochs of test_label_issues' fixture took 147 s instead of 30.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

# What the CLI registers before it loads a config (the config loader imports none of them): the built-in
# methods (names, config sections), the model.arch check and the train.log_with check.
import tcl_lite.methods  # noqa: E402, F401
import tcl_lite.models.archs  # noqa: E402, F401
import tcl_lite.runlog.trackers  # noqa: E402, F401

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# A digits run small enough for a test: 8x8 images, a narrow CNN, 32 per batch (39 steps/epoch).
TINY = ["data.image_size=8", "model.width=8", "train.batch_size=32", "train.eval_batch_size=512",
        "train.epochs=2", "train.log_every=1000"]


def run_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("ACCELERATE_USE_CPU", None)
    return env


def train_cmd(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), *args]


def run_train(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(train_cmd(*args), cwd=ROOT, env=run_env(), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    steps = sorted((run_dir / "checkpoints").glob("step_*"))
    return load_file(str(steps[-1] / "model.safetensors"))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


@pytest.fixture
def fresh_accelerate():
    """Accelerate keeps process-wide state; reset it so each in-process test gets its own."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def train_step(method, batch, info, micro_batches=1):
    """One step as the engine calls it: the whole batch, which the method splits into
    ``micro_batches`` micro-batches (the engine's memory policy, ``ctx.micro_batches``)."""
    method.ctx.micro_batches = micro_batches
    return method.training_step(batch, info)
