"""Shared test helpers: tiny configurations and running train.py as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
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
# methods (names, config sections), architectures, datasets, views and the owners' config checks.
import tcl_lite  # noqa: E402

tcl_lite.register_builtins()

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# A digits run small enough for a test: 8x8 images, a narrow CNN, 32 per batch (39 steps/epoch).
TINY = ["data.image_size=8", "model.width=8", "train.batch_size=32", "train.eval_batch_size=512",
        "train.epochs=2", "train.log_every=1000"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "early(run=fn): fn(folder, stop) runs in a background thread from the session's "
                                       "start; the test reads its result from the early_results fixture")


@pytest.fixture(scope="session", autouse=True)
def early_results(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Long, independent end-to-end runs of the tests marked ``early`` start with the session, in background
    threads: on 2 cores they take the core that the suite's one-process tests leave idle, instead of holding
    both later. ``{fn: Future}``: a marked test waits for its run there (what the run raised, it raises)."""
    fns = list(dict.fromkeys(m.kwargs["run"] for item in request.session.items for m in item.iter_markers("early")))
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=max(1, len(fns)))
    futures = {fn: pool.submit(fn, tmp_path_factory.mktemp(fn.__name__), stop) for fn in fns}
    yield futures
    stop.set()  # a session that ends first (-x, Ctrl-C) stops the runs still going
    pool.shutdown(wait=True)


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


def run_side_by_side(*runs: list[str], timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """Independent train.py runs at once (one core each: the suite's time on 2 cores), each checked as
    run_train checks it; results in the order given."""
    with ThreadPoolExecutor(max_workers=len(runs)) as pool:
        return list(pool.map(lambda args: run_train(*args, timeout=timeout), runs))


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


# One small finished CE run for the run-safety tests (forks, schema fuzz, path walk): 480 samples / 32 = 15
# steps per epoch, 2 epochs, a checkpoint every 5 steps, all kept (step_00000005 ... step_00000030).
SMALL = [*TINY, "data.train_subset=480", "checkpoint.every_steps=5", "checkpoint.keep_last=10"]


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> Path:
    """Read-only: tests copy it before changing anything."""
    out = tmp_path_factory.mktemp("small_run") / "run"
    run_train(*SMALL, f"output_dir={out}")
    return out


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file's bytes and every folder (None), by relative path."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")}


def rewrite(ckpt: Path, name: str, data: bytes) -> None:
    """Replace a file of a checkpoint and re-hash it into the manifest, as an adversary would: only the
    schema can tell."""
    import hashlib
    import json

    (ckpt / name).write_bytes(data)
    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest[name] = hashlib.sha256(data).hexdigest()
    (ckpt / "manifest.json").write_text(json.dumps(manifest))


# A complete TCL run on the digits at 40% symmetric noise that ends `trustworthy`: configs/digits_tcl.yaml on a
# shortened schedule (15 epochs, 6 of warm-up: about the preset's share) at 12 px, the cheapest one found that
# keeps the verdict (bench/trust_validation.py's digits_symm40_tcl_e15w6px12 row; shorter ones are doubtful).
TRUSTWORTHY_TCL = ["--config", str(ROOT / "configs" / "digits_tcl.yaml"), "data.noise_type=symmetric",
                   "data.noise_rate=0.4", "train.epochs=15", "tcl.warmup_epochs=6", "data.image_size=12",
                   "data.num_workers=0", "seed=0",
                   # the per-sample draws of BENCHMARKS §11's validation (auto is batched on the CPU since)
                   "data.augment_on=workers"]


@pytest.fixture(scope="session")
def trustworthy_tcl(tmp_path_factory) -> Path:
    """Read-only: the run of TRUSTWORTHY_TCL (test_trust, test_label_issues)."""
    out = tmp_path_factory.mktemp("trustworthy_tcl") / "run"
    run_train(*TRUSTWORTHY_TCL, f"output_dir={out}", timeout=900)
    return out
