"""The TCL method: exact large-batch gradients, BatchNorm statistics, the warm-up switch, state and resume."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, TINY, assert_same_weights, final_weights, run_env, run_side_by_side, run_train, train_step

from tcl_lite.algorithms import gradient_cache as gc
from tcl_lite.config import load_config
from tcl_lite.methods import StepInfo, TrainContext
from tcl_lite.methods.tcl.method import TCL, _MixedStep

B = 32
LATE = StepInfo(epoch=100, step_in_epoch=0, global_step=0, steps_per_epoch=1)  # after warm-up


def _setup(tmp_path, *overrides: str, mixed_precision: str = "no") -> tuple[TCL, dict]:
    """An in-process TCL method on a tiny CNN, one fixed batch, and planted detection state (random
    w and prototypes) so that the corrected targets and the alignment term are exercised."""
    from accelerate import Accelerator

    from tcl_lite.data import build_data
    from tcl_lite.models.network import build_model

    cfg = load_config(None, ["method=tcl", "data.image_size=8", "model.width=8", "model.proj_dim=16", *overrides])
    acc = Accelerator(cpu=True, mixed_precision=mixed_precision)
    data = build_data(cfg.data, cfg.seed)
    torch.manual_seed(0)
    model = build_model(cfg.model, data.num_classes, in_channels=3, image_size=8, with_projector=True,
                        activation_checkpointing=cfg.train.activation_checkpointing)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model, opt = acc.prepare(model, opt)
    method = TCL(TrainContext(cfg, acc, model, opt, data, tmp_path))
    ds = data.train_views(TCL.views)
    batch = torch.utils.data.default_collate([ds[i] for i in range(B)])
    g = torch.Generator().manual_seed(1)
    method.clean_probability = torch.rand(len(data.noisy_labels), generator=g)
    method.prototypes = F.normalize(torch.randn(data.num_classes, 16, generator=g), dim=1)
    method.est_clean_fraction = 0.6
    return method, batch


def _grads(method: TCL, batch: dict, micro: int = 1, info: StepInfo = LATE, seed: int = 123) -> tuple[list, dict]:
    method.ctx.optimizer.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same lambda, permutation and dropout draws for every variant
    logs = train_step(method, batch, info, micro)
    return [p.grad.clone() for p in method.ctx.model.parameters()], logs


def _max_rel_diff(a: list, b: list) -> float:
    return max(float((x - y).abs().max() / (y.abs().max() + 1e-12)) for x, y in zip(a, b))


def test_exact_mode_gas4_equals_the_single_batch_step(fresh_accelerate, tmp_path):
    """Batch-independent layers (GroupNorm/LayerNorm) and no dropout, so 1 and 4 micro-batches compute
    the same function: the full-batch loss's gradient must come out the same through the cache."""
    method, batch = _setup(tmp_path, "model.norm=group", "model.dropout=0")
    g1, l1 = _grads(method, batch)
    g4, l4 = _grads(method, batch, 4)
    assert torch.allclose(l1["loss"], l4["loss"], atol=1e-5)
    for a, b in zip(g4, g1):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4), float((a - b).abs().max())
    assert l1["warmup"] == 0  # epoch 100: the corrected targets were used
    # local mode is a different objective (negatives, mixup partners, balance per micro-batch)
    method.tcfg.gradient_mode = "local"
    gl, ll = _grads(method, batch, 4)
    assert _max_rel_diff(gl, g1) > 1e-2
    assert abs(float(ll["contrastive"]) - float(l1["contrastive"])) > 0.1


def test_exact_mode_replays_dropout(fresh_accelerate, tmp_path, monkeypatch):
    """With dropout the masks of 1 and 4 micro-batches differ (other row layout), so the reference is the
    full graph over the same 4 micro-batch forwards: one backward through all of them at once.
    The cache must give its gradient; without restoring the RNG for the replay it does not."""
    method, batch = _setup(tmp_path, "model.norm=group", "model.dropout=0.5")

    def full_graph() -> list:
        method.ctx.optimizer.zero_grad(set_to_none=True)
        torch.manual_seed(123)
        lam = method._draw_lambda()
        step = _MixedStep(batch["image"], lam, B)
        outs = [method._forward_fn(step, 4)(j) for j in range(4)]
        loss, _ = method.loss_on_outputs(torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs]),
                                         batch["label"], batch["index"], lam, step.perm, warm=False, chunks=4)
        loss.backward()
        return [p.grad.clone() for p in method.ctx.model.parameters()]

    reference = full_graph()
    cached, _ = _grads(method, batch, 4)
    for a, b in zip(cached, reference):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4), float((a - b).abs().max())
    monkeypatch.setattr(gc, "_set_rng_state", lambda state, device: None)  # no replay: fresh masks
    unreplayed, _ = _grads(method, batch, 4)
    assert _max_rel_diff(unreplayed, reference) > 1e-3


@pytest.mark.parametrize("checkpointing", [False, True])
def test_exact_mode_updates_batchnorm_statistics_once_per_micro_batch(fresh_accelerate, tmp_path, checkpointing):
    method, batch = _setup(tmp_path, "model.norm=batch", "model.dropout=0.25",
                           f"train.activation_checkpointing={str(checkpointing).lower()}")
    model = method.ctx.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _grads(method, batch, 4)
    after = model.state_dict()

    # the same 4 micro-batches (same mixup, same dropout draws), each run forward once
    model.load_state_dict(before)
    torch.manual_seed(123)
    step = _MixedStep(batch["image"], method._draw_lambda(), B)
    with torch.no_grad():
        for j in range(4):
            model(step.encoder_input(j, 4))
    once = model.state_dict()
    bn = [k for k in once if "running_" in k or "num_batches_tracked" in k]
    assert bn and any("num_batches_tracked" in k for k in bn)
    for k in bn:
        assert torch.equal(after[k], once[k]), k
        if "num_batches_tracked" in k:
            assert int(after[k]) == int(before[k]) + 4


def test_plain_path_and_bf16_autocast_give_finite_gradients(fresh_accelerate, tmp_path):
    method, batch = _setup(tmp_path, mixed_precision="bf16")
    grads, logs = _grads(method, batch, 2)
    assert all(torch.isfinite(g).all() for g in grads) and torch.isfinite(logs["loss"])
    assert set(logs) >= {"loss", "contrastive", "cross", "mixed", "align", "entropy", "balance", "warmup"}


def test_warmup_switches_to_corrected_targets_at_the_configured_epoch(fresh_accelerate, tmp_path):
    method, batch = _setup(tmp_path, "model.norm=group", "model.dropout=0", "tcl.warmup_epochs=3")
    method.clean_probability.zero_()  # every label distrusted: corrected targets = the other view

    def step(epoch: int) -> dict:
        return _grads(method, batch, info=StepInfo(epoch, 0, 0, 1))[1]

    warm, last_warm, first_corrected = step(0), step(2), step(3)
    assert float(warm["warmup"]) == 1 and float(last_warm["warmup"]) == 1 and float(first_corrected["warmup"]) == 0
    # same model, same draws: only the targets differ -- plain noisy labels, then the swapped predictions
    assert float(warm["cross"]) == float(last_warm["cross"])
    assert abs(float(first_corrected["cross"]) - float(warm["cross"])) > 0.1
    assert float(first_corrected["contrastive"]) == float(warm["contrastive"])


def test_state_dict_round_trip_is_exact(fresh_accelerate, tmp_path):
    method, _ = _setup(tmp_path)
    state = method.state_dict()
    assert {"clean_probability", "prototypes", "corrected_label"} <= set(state)
    other, _ = _setup(tmp_path)
    other.clean_probability.fill_(0.5)
    other.load_state_dict(state)
    for key in ("clean_probability", "prototypes", "corrected_label"):
        assert torch.equal(getattr(other, key), state[key])
    assert other.est_clean_fraction == 0.6 and other.clean_scale == 0.6
    from tcl_lite.errors import CheckpointError

    with pytest.raises(CheckpointError, match="no TCL state"):
        other.load_state_dict({})


# -- through train.py ------------------------------------------------------------------------------

RUN = [*TINY, "method=tcl", "tcl.warmup_epochs=1", "train.gradient_accumulation_steps=2", "model.proj_dim=32",
       # constant lr: under the cosine schedule the lr of an epoch depends on train.epochs (the
       # divisor is the total), so a 1-epoch run continued to 2 would not be the 2-epoch run
       "optim.schedule=constant", "optim.lr=0.05"]


FIRST_EPOCH = [a if a != "train.epochs=2" else "train.epochs=1" for a in RUN]


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    """The 2-epoch run, and beside it (at once: one core each) the 1-epoch run the resume test continues."""
    out, first = tmp_path_factory.mktemp("tcl_two"), tmp_path_factory.mktemp("tcl_first") / "run"
    proc, _ = run_side_by_side([*RUN, f"output_dir={out}"], [*FIRST_EPOCH, f"output_dir={first}"])
    return out, proc.stdout, first


def _method_state(run_dir):
    from tcl_lite.checkpoints.state_io import load_tree

    return load_tree(sorted((run_dir / "checkpoints").glob("step_*"))[-1], "method")


def test_resume_restores_weights_w_and_prototypes_exactly(two_epochs, tmp_path):
    ref, stdout, first = two_epochs
    # the switch is visible in the step logs: epoch 1 warm-up, epoch 2 corrected targets
    assert "warmup 1.0000" in stdout and "warmup 0.0000" in stdout
    assert stdout.index("warmup 1.0000") < stdout.index("epoch 1/2") < stdout.index("warmup 0.0000")
    records = [json.loads(x) for x in (ref / "metrics.jsonl").read_text().splitlines()]
    for key in ("knn_acc", "label_correction_acc", "detection_acc", "detection_auc", "est_clean_fraction"):
        assert all(key in r for r in records), key

    out = tmp_path / "resumed"
    shutil.copytree(first, out)  # the fixture's 1-epoch run, continued to 2
    proc = run_train(*RUN, f"output_dir={out}", "--resume")
    assert "resumed from" in proc.stdout
    assert_same_weights(final_weights(out), final_weights(ref))
    a, b = _method_state(out), _method_state(ref)
    for key in ("clean_probability", "prototypes", "corrected_label"):
        assert torch.equal(a[key], b[key]), key
    assert a["est_clean_fraction"] == b["est_clean_fraction"]


def test_export_writes_csv_and_npy_and_rejects_other_methods(two_epochs, tmp_path):
    ref, _, _ = two_epochs
    proc = subprocess.run([sys.executable, "-m", "tcl_lite", "export", str(ref), "--out", str(tmp_path / "x")],
                          cwd=ROOT, env=run_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    state = _method_state(ref)
    with open(tmp_path / "x" / "clean_probability.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["index", "given_label", "corrected_label", "clean_probability", "confidence", "applied",
                             "true_label"]  # confidence, applied: the run's trust diagnostics cover its last checkpoint
    assert "trust verdict: " in proc.stdout
    noisy = np.load(ref / "noisy_labels.npy")
    assert len(rows) == len(noisy) == len(state["clean_probability"])
    w = np.load(tmp_path / "x" / "clean_probability.npy")
    assert np.array_equal(w, state["clean_probability"].numpy())
    assert np.array_equal(np.load(tmp_path / "x" / "corrected_label.npy"), state["corrected_label"].numpy())
    assert [int(r["given_label"]) for r in rows] == noisy.tolist()
    assert np.allclose([float(r["clean_probability"]) for r in rows], w)

    # a checkpoint of another method: a clear error, exit code 2
    # a complete, verifiable checkpoint whose method state is CE's (none): the TCL one with its state replaced
    import hashlib

    from tcl_lite.checkpoints.state_io import save_tree

    ce = tmp_path / "ce_run"
    source = sorted((ref / "checkpoints").glob("step_*"))[-1]
    ckpt = ce / "checkpoints" / source.name
    shutil.copytree(source, ckpt)
    (ckpt / "method.safetensors").unlink()
    save_tree(ckpt, "method", {})
    (ckpt / "manifest.json").write_text(json.dumps({p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                                                    for p in sorted(ckpt.iterdir()) if p.name != "manifest.json"}))
    (ce / "config.yaml").write_text("method: ce\n")
    proc = subprocess.run([sys.executable, "-m", "tcl_lite", "export", str(ckpt)], cwd=ROOT, env=run_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "method 'ce'" in proc.stderr, proc.stderr
    assert "`method=tcl` or `method=dividemix`" in proc.stderr, "names the methods that keep verdicts"
