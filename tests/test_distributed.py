"""Two real gloo processes on the CPU through `accelerate launch`: sharded data, identical weights."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY, free_port, run_env
from safetensors.torch import load_file

pytestmark = pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate CLI not on PATH")


def launch_two(script: str, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    # ACCELERATE_USE_CPU + --multi_gpu gives two gloo ranks; `--cpu --num_processes 2` alone starts one.
    env = dict(run_env(), ACCELERATE_USE_CPU="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), script, *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def two_processes_end_identical(out: Path, *args: str) -> tuple[dict[str, torch.Tensor], str]:
    """A two-network method (`tests/dist_train.py` saves every network) trained by two gloo processes into
    ``out``: asserts both ranks ran with 2 processes and hold identical weights of both networks; returns
    rank 0's weights and the run's train.log."""
    launch_two(str(ROOT / "tests" / "dist_train.py"), *args, f"output_dir={out}")
    infos = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["num_processes"] for i in infos] == [2, 2]
    w0, w1 = (load_file(str(out / f"rank{r}_all.safetensors")) for r in (0, 1))
    assert {k.split(".", 1)[0] for k in w0} == {"0", "1"}  # both networks
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    return w0, (out / "train.log").read_text()


def test_two_gloo_processes_train_identical_weights_on_disjoint_shards(tmp_path):
    out = tmp_path / "ddp"
    launch_two(str(ROOT / "tests" / "dist_train.py"), *TINY, "train.batch_size=16", f"output_dir={out}")
    infos = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["num_processes"] for i in infos] == [2, 2]
    assert [i["process_index"] for i in infos] == [0, 1]
    assert "gloo" in infos[0]["backend"]
    # each epoch, the two ranks see different samples (a sharded, not a duplicated, data order)
    per_epoch = len(infos[0]["seen"]) // 2
    assert not set(infos[0]["seen"][:per_epoch]) & set(infos[1]["seen"][:per_epoch])
    w0, w1 = (load_file(str(out / f"rank{r}.safetensors")) for r in (0, 1))
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    # and training moved them away from the (seeded, identical) initialisation
    init = load_file(str(out / "init0.safetensors"))
    for k, v in load_file(str(out / "init1.safetensors")).items():
        assert torch.equal(v, init[k]), "both ranks start from the same seeded weights"
    moved = [k for k in init if init[k].is_floating_point() and not torch.allclose(init[k], w0[k])]
    assert len(moved) > len(init) // 2
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and records[-1]["test_acc"] > 0.12
