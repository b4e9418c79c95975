"""Shared test helpers: tiny configurations and running train.py as a real process."""

from __future__ import annotations

import os
import shutil
import socket
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
# pytest-xdist's worker id ("gw0", ...) when the suite runs in several processes (make test: -n 2), else None.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
# Under pytest-xdist (one worker per core) each worker computes on one thread: a worker's default pool of one
# thread per core would share the cores with the other worker's, the oversubscription that ran training many
# times slower on a busy 2-core machine (BENCHMARKS.md §10).
if XDIST_WORKER:
    os.environ.setdefault("OMP_NUM_THREADS", "1")

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


# Under pytest-xdist (make test: --dist loadfile --no-loadscope-reorder, a module runs whole on one worker, in
# this order) the modules holding the longest runs start first, so that no long module starts last and leaves
# one core idle at the end; longest first (a missing name only changes the order).
LONG_MODULES_FIRST = ("test_tcl_digits.py", "test_mlnt.py", "test_trust.py", "test_promix.py", "test_notebook.py",
                      "test_readme.py", "test_run_safety.py", "test_dividemix.py", "test_resume.py",
                      "test_packaging.py", "test_notebook_from_url.py", "test_gpu_kit.py", "test_tcl_method.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if XDIST_WORKER:  # the same order in every worker: the scheduler requires identical collections
        rank = {name: i for i, name in enumerate(LONG_MODULES_FIRST)}
        items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "early(run=fn): fn(folder, stop) runs in a background thread from the session's "
                                       "start; the test reads its result from the early_results fixture")


class _OnDemand(dict):
    """Under pytest-xdist: every worker collects every test, so a run is started when a test of this worker asks
    for it, not at the session's start (the workers already keep both cores busy)."""

    def __init__(self, pool: ThreadPoolExecutor, start) -> None:
        super().__init__()
        self._pool, self._start = pool, start

    def __missing__(self, fn):
        self[fn] = self._pool.submit(*self._start(fn))
        return self[fn]


@pytest.fixture(scope="session", autouse=True)
def early_results(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Long, independent end-to-end runs of the tests marked ``early`` start with the session, in background
    threads: on 2 cores they take the core that the suite's one-process tests leave idle, instead of holding
    both later. ``{fn: Future}``: a marked test waits for its run there (what the run raised, it raises)."""
    fns = list(dict.fromkeys(m.kwargs["run"] for item in request.session.items for m in item.iter_markers("early")))
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=max(1, len(fns)))
    start = lambda fn: (fn, tmp_path_factory.mktemp(fn.__name__), stop)  # noqa: E731
    futures = _OnDemand(pool, start) if XDIST_WORKER else {fn: pool.submit(*start(fn)) for fn in fns}
    yield futures
    stop.set()  # a session that ends first (-x, Ctrl-C) stops the runs still going
    pool.shutdown(wait=True)


def free_port() -> int:
    """A TCP port no process listens on now, for a launcher's --main_process_port: two launches at once
    (pytest-xdist's workers) must not meet on one rendezvous port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shared_run(tmp_path_factory: pytest.TempPathFactory, name: str, build) -> Path:
    """``build(out)`` once per session, read-only afterwards. Under pytest-xdist the workers share it: the
    first to ask builds it under a file lock, the others wait and reuse it (instead of each training it)."""
    if XDIST_WORKER is None:
        out = tmp_path_factory.mktemp(name) / "run"
        build(out)
        return out
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp().parent / name  # the session's folder, above every worker's own
    with FileLock(str(root) + ".lock"):
        if not (root / "built").is_file():
            shutil.rmtree(root, ignore_errors=True)  # what a failed build in another worker left
            root.mkdir(parents=True)
            build(root / "run")
            (root / "built").write_text("ok\n")
    return root / "run"


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
    return shared_run(tmp_path_factory, "small_run", lambda out: run_train(*SMALL, f"output_dir={out}"))


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
# shortened schedule (20 epochs, 7 of warm-up: about the preset's share) with the default views (batched on the
# CPU), the cheapest one found that keeps the verdict (bench/trust_validation.py's digits_symm40_tcl_e20w7 row;
# at 12 px or 15 epochs it is doubtful or its applied changes are less often right).
TRUSTWORTHY_TCL = ["--config", str(ROOT / "configs" / "digits_tcl.yaml"), "data.noise_type=symmetric",
                   "data.noise_rate=0.4", "train.epochs=20", "tcl.warmup_epochs=7", "data.num_workers=0", "seed=0"]


@pytest.fixture(scope="session")
def trustworthy_tcl(tmp_path_factory) -> Path:
    """Read-only: the run of TRUSTWORTHY_TCL (test_trust, test_label_issues)."""
    return shared_run(tmp_path_factory, "trustworthy_tcl",
                      lambda out: run_train(*TRUSTWORTHY_TCL, f"output_dir={out}", timeout=900))
