"""DivideMix in the engine: one step against a float64 formulation written from dividemix.md, the
co-divide swap, the lambda_u ramp, exact accumulation, SIGKILL + resume and two gloo processes."""

from __future__ import annotations

import json
import math
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, assert_same_weights, run_train, train_step
from safetensors.torch import load_file

from tcl_lite.config import load_config
from tcl_lite.methods import StepInfo, TrainContext
from tcl_lite.methods.dividemix.method import DivideMix

K = 10
# 8x8 digits, a narrow CNN, a linear head; a 400-sample subset keeps an epoch to a few seconds.
SMALL = [*TINY, "method=dividemix", "model.head=linear", "data.train_subset=400", "dividemix.warmup_epochs=1",
         "dividemix.rampup_epochs=1"]
# Through train.py: batch 16 and lr 0.1 for enough learning in two warm-up epochs (12 steps per network each).
RUN = [*SMALL, "train.batch_size=16", "optim.lr=0.1", "optim.scale_lr=false", "dividemix.warmup_epochs=2",
       "train.epochs=4"]


def make_method(tmp_path, *overrides: str, precision: str = "no") -> DivideMix:
    from accelerate import Accelerator

    from tcl_lite.data import build_data
    from tcl_lite.engine.run_setup import build_networks, build_optimizers, prepare

    # the per-sample views (the reference's path): the steps below take the collated batch as the engine hands it
    cfg = load_config(None, [*SMALL, "model.norm=group", "model.dropout=0", "train.batch_size=8",
                             "data.augment_on=workers", *overrides])
    acc = Accelerator(cpu=True, mixed_precision=precision)
    data = build_data(cfg.data, cfg.seed)
    torch.manual_seed(0)
    nets = build_networks(cfg, DivideMix, data)
    models, optimizers = prepare(acc, nets, build_optimizers(cfg, nets, 0.1))
    return DivideMix(TrainContext(cfg, acc, models, optimizers, data, tmp_path))


def fixed_batch(method: DivideMix) -> dict:
    ds = method._two_views
    ds.set_epoch(3)
    collate = torch.utils.data.default_collate
    return {"labeled": collate([ds[i] for i in range(8)]), "unlabeled": collate([ds[i] for i in range(8, 16)])}


def constructed_probabilities(n: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    return {"net1": torch.rand(n, generator=g), "net2": torch.rand(n, generator=g)}


def reference_terms(method: DivideMix, batch: dict, seed: int) -> dict[str, float]:
    """One step of network 1 written from dividemix.md in float64, sample by sample."""
    a, b = method.ctx.models["net1"], method.ctx.models["net2"]
    (x1, x2), (u1, u2) = batch["labeled"]["image"], batch["unlabeled"]["image"]
    y, idx = batch["labeled"]["label"], batch["labeled"]["index"]
    w = method.prob["net2"][idx].double()  # network 1 learns from network 2's division
    T, bsz = 0.5, x1.shape[0]
    torch.manual_seed(seed)
    with torch.no_grad():
        a.train()
        b.eval()
        pu = sum(z.softmax(1) for z in (a(u1).logits, a(u2).logits, b(u1).logits, b(u2).logits)) / 4
        pu = pu ** (1 / T) / (pu ** (1 / T)).sum(1, keepdim=True)
        px = (a(x1).logits.softmax(1) + a(x2).logits.softmax(1)) / 2
        px = w[:, None] * F.one_hot(y, K).double() + (1 - w[:, None]) * px
        px = px ** (1 / T) / (px ** (1 / T)).sum(1, keepdim=True)
        lam = float(torch.distributions.Beta(4.0, 4.0).sample())
        lam = max(lam, 1 - lam)
        inputs, targets = torch.cat([x1, x2, u1, u2]), torch.cat([px, px, pu, pu])
        perm = torch.randperm(4 * bsz)
        mixed, mixed_t = lam * inputs + (1 - lam) * inputs[perm], lam * targets + (1 - lam) * targets[perm]
        z = a(mixed).logits.double().numpy()
    t = mixed_t.numpy()
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    lx = -sum(sum(t[i, c] * math.log(p[i, c]) for c in range(K)) for i in range(2 * bsz)) / (2 * bsz)
    lu = sum((p[i, c] - t[i, c]) ** 2 for i in range(2 * bsz, 4 * bsz) for c in range(K)) / (2 * bsz * K)
    pbar = p.mean(0)
    penalty = sum((1 / K) * math.log((1 / K) / pbar[c]) for c in range(K))
    return {"lx": lx, "lu": lu, "penalty": penalty}


def test_step_terms_match_a_float64_formulation(tmp_path, fresh_accelerate):
    method = make_method(tmp_path)
    for net in method.ctx.models.values():
        net.double()
    batch = fixed_batch(method)
    for part in batch.values():
        part["image"] = [v.double() for v in part["image"]]
    method.prob = constructed_probabilities(len(method.noisy))
    method._num_iter["net1"] = 10
    before = {k: v.clone() for k, v in method.ctx.models["net1"].state_dict().items()}
    # epoch 1 + 3/10, warm-up 1, ramp 1: lambda_u = 0.3 * 25
    info = StepInfo(1, 3, 40, 20, "train_net1", 3, 10, role="mixmatch", phase_info={"network": "net1"})
    torch.manual_seed(11)
    logs = train_step(method, batch, info)
    method.ctx.models["net1"].load_state_dict(before)
    ref = reference_terms(method, batch, seed=11)
    for key in ("lx", "lu", "penalty"):
        assert float(logs[key]) == pytest.approx(ref[key], rel=1e-6), key
    assert float(logs["lambda_u"]) == pytest.approx(7.5)
    assert float(logs["loss"]) == pytest.approx(ref["lx"] + 7.5 * ref["lu"] + ref["penalty"], rel=1e-6)
    assert method.ctx.models["net2"].training is False, "the other network is fixed in eval mode"
    assert all(p.grad is None for p in method.ctx.models["net2"].parameters()), "only network 1 learns"


def test_accumulation_through_the_gradient_cache_is_exact(tmp_path, fresh_accelerate):
    method = make_method(tmp_path)
    batch = fixed_batch(method)
    method.prob = constructed_probabilities(len(method.noisy))
    info = StepInfo(2, 0, 40, 20, "train_net2", 0, 10, role="mixmatch", phase_info={"network": "net2"})
    grads = []
    for micro in (1, 2, 4):
        for opt in method.ctx.optimizers.values():
            opt.zero_grad(set_to_none=True)
        torch.manual_seed(5)
        logs = train_step(method, batch, info, micro)
        grads.append((float(logs["loss"]), [p.grad.clone() for p in method.ctx.models["net2"].parameters()]))
    (l1, g1), *rest = grads
    for loss, g in rest:
        assert loss == pytest.approx(l1, rel=1e-6)
        for a, b in zip(g1, g):
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)


def test_co_divide_trains_each_network_on_the_other_networks_split(tmp_path, fresh_accelerate):
    method = make_method(tmp_path, "dividemix.p_threshold=0.5")
    n = len(method.noisy)
    method.prob = constructed_probabilities(n)
    plan = method.epoch_plan(1)  # after the one warm-up epoch
    assert [p.name for p in plan] == ["train_net1", "train_net2"]
    assert [p.optimizers for p in plan] == [("net1",), ("net2",)]
    for phase, other in zip(plan, ("net2", "net1")):
        clean = method.prob[other].numpy() > 0.5
        assert np.array_equal(phase.loaders["labeled"].dataset.indices, np.flatnonzero(clean))
        assert np.array_equal(phase.loaders["unlabeled"].dataset.indices, np.flatnonzero(~clean))
    # the co-refined targets use the other network's w: w = 1 gives the sharpened given label
    method.prob["net2"][:8], method.prob["net1"][:8] = 1.0, 0.0
    tx, _ = method._targets("net1", *fixed_batch(method).values())
    labels = fixed_batch(method)["labeled"]["label"]
    assert torch.allclose(tx, F.one_hot(labels, K).float(), atol=1e-6)
    warm = method.epoch_plan(0)
    assert [p.name for p in warm] == ["warmup_net1", "warmup_net2"]
    assert warm[0].loaders[""].batch_size == 2 * method.cfg.train.batch_size  # the warm-up's twice the batch


def test_bf16_step_is_finite_and_close_to_float32(tmp_path, fresh_accelerate):
    from accelerate.state import AcceleratorState

    results = []
    for precision in ("no", "bf16"):
        AcceleratorState._reset_state(reset_partial_state=True)
        method = make_method(tmp_path, precision=precision)
        method.prob = constructed_probabilities(len(method.noisy))
        torch.manual_seed(5)
        info = StepInfo(2, 0, 40, 20, "train_net1", 0, 10, role="mixmatch", phase_info={"network": "net1"})
        logs = train_step(method, fixed_batch(method), info, 2)
        grads = torch.cat([p.grad.flatten() for p in method.ctx.models["net1"].parameters()])
        results.append((float(logs["loss"]), grads))
    (l32, g32), (l16, g16) = results
    assert math.isfinite(l16) and l16 == pytest.approx(l32, rel=0.05)
    assert F.cosine_similarity(g32, g16, dim=0) > 0.95


@pytest.mark.parametrize("epoch,step,expected", [(1, 0, 0.0), (1, 4, 10.0), (2, 0, 25.0), (3, 9, 25.0)])
def test_lambda_u_ramps_linearly_over_fractional_epochs(tmp_path, fresh_accelerate, epoch, step, expected):
    """warm-up 1 epoch, ramp 1 epoch, lambda_u 25: lambda_u(epoch + step / num_iter)."""
    method = make_method(tmp_path)
    method.prob = constructed_probabilities(len(method.noisy))
    method._num_iter["net1"] = 10
    info = StepInfo(epoch, step, 0, 20, "train_net1", step, 10, role="mixmatch", phase_info={"network": "net1"})
    logs = train_step(method, fixed_batch(method), info)
    assert float(logs["lambda_u"]) == pytest.approx(expected)


# -- through train.py ----------------------------------------------------------------------------

FEATURES = ["train.gradient_accumulation_steps=2", "train.activation_checkpointing=true", "optim.name=sgd8bit",
            "checkpoint.every_steps=2"]


KILL_AFTER_WARMUP = r"step_000000(5[4-9]|6\d)"  # after the 52 warm-up steps


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The reference run and, beside it (one core each), the run the SIGKILL test resumes, killed after the
    warm-up. Read-only: the test copies what it resumes."""
    from test_resume import _kill_when

    root = tmp_path_factory.mktemp("dividemix")
    out = {"reference": root / "reference", "killed": root / "killed"}
    with ThreadPoolExecutor(max_workers=1) as pool:
        reference = pool.submit(run_train, *RUN, *FEATURES, f"output_dir={out['reference']}")
        _kill_when(out["killed"], KILL_AFTER_WARMUP, [*RUN, *FEATURES])
        reference.result()
    return out


@pytest.fixture(scope="module")
def reference_run(runs) -> Path:
    return runs["reference"]


def _final(run_dir) -> dict:
    step = sorted((run_dir / "checkpoints").glob("step_*"))[-1]
    return {"net1": load_file(str(step / "model.safetensors")), "net2": load_file(str(step / "model.net2.safetensors")),
            "state": load_file(str(step / "method.safetensors"))}


def test_a_run_trains_both_networks_and_records_the_division(reference_run):
    records = [json.loads(line) for line in (reference_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert "detection_auc" not in records[1] and records[-1]["detection_auc"] > 0.6  # 40% noise, two divisions
    assert records[-1]["test_acc"] > 0.2  # chance: 0.1
    final = _final(reference_run)
    assert not all(torch.equal(final["net1"][k], final["net2"][k]) for k in final["net1"]), "two networks"


def test_sigkill_after_the_warm_up_then_resume_is_bit_identical(runs, reference_run, tmp_path):
    out = tmp_path / "killed"
    shutil.copytree(runs["killed"], out)
    warmup_steps = 2 * 2 * 13  # two epochs of two warm-up passes of 13 batches of 32 (the last one of 16)
    newest = max((out / "checkpoints").glob("step_*"), key=lambda p: p.name)
    trainer = json.loads((newest / "trainer.json").read_text())
    assert trainer["global_step"] > warmup_steps and trainer["epoch"] >= 1 and trainer["step_in_epoch"] > 0, trainer
    run_train(*RUN, *FEATURES, f"output_dir={out}", "--resume")
    a, b = _final(out), _final(reference_run)
    for key in a:
        assert_same_weights(a[key], b[key])


def test_two_gloo_processes_end_with_identical_networks(tmp_path):
    if shutil.which("accelerate") is None:
        pytest.skip("accelerate CLI not on PATH")
    from test_distributed import two_processes_end_identical

    _, log = two_processes_end_identical(tmp_path / "ddp", *SMALL, "train.batch_size=16", "train.epochs=2")
    assert re.search(r"co-divide, epoch 2: labeled \d+", log)


# -- the reference's GMM precision and loader lengths ---------------------------------------------------------


def test_co_divide_gmm_is_fitted_in_float64_as_the_reference():
    """The reference hands scikit-learn a float32 torch tensor, which its fit converts to float64 (and its
    predict_proba takes as float32 values); w is float64."""
    from sklearn.mixture import GaussianMixture

    from tcl_lite.methods.dividemix.codivide import clean_probability, normalise_losses

    rng = np.random.default_rng(0)
    losses = normalise_losses(np.concatenate([rng.gamma(1.0, 0.2, 300), rng.gamma(4.0, 0.6, 200)]))
    w = clean_probability(losses, seed=3)
    assert w.dtype == np.float64
    x = torch.from_numpy(losses).reshape(-1, 1)  # the reference's input: a float32 tensor
    gmm = GaussianMixture(n_components=2, max_iter=10, tol=1e-2, reg_covar=5e-4, random_state=3).fit(x)
    assert gmm.means_.dtype == np.float64
    assert np.array_equal(w, gmm.predict_proba(x)[:, gmm.means_.argmin()])
    w32 = clean_probability(losses, seed=3, dtype="float32")  # the named option: tcl_lite's earlier fit
    assert w32.dtype == np.float32 and np.abs(w32 - w).max() < 1e-3


def test_warm_up_and_unlabeled_loaders_keep_their_partial_batch(tmp_path, fresh_accelerate):
    from tcl_lite.engine.epoch_data import EpochData

    method = make_method(tmp_path, "train.batch_size=6")  # 400 samples; warm-up batch 12: 33 full + 4
    counts = EpochData(method.ctx.accelerator, method.cfg)
    assert counts.steps_per_epoch(method.epoch_plan(0)) == 2 * 34  # each network: ceil(400 / 12)
    n = len(method.noisy)
    method.prob = {"net1": torch.ones(n, dtype=torch.float64), "net2": torch.ones(n, dtype=torch.float64)}
    method.prob["net2"][:13] = 0.0  # network 1: 13 unlabeled samples = 2 batches of 6 + 1
    method.prob["net1"][:14] = 0.0  # network 2: 14 = 2 batches of 6 + 2
    unlabeled = {p.name: p.loaders["unlabeled"] for p in method.epoch_plan(1)}
    assert unlabeled["train_net1"].drop_last, "a tail of one sample (BatchNorm cannot train on it) is dropped"
    assert not unlabeled["train_net2"].drop_last
    assert len(counts.loader(method.epoch_plan(1)[1], "unlabeled")) == 3

    dropping = make_method(tmp_path, "train.batch_size=6", "dividemix.loader_tails=drop")
    assert EpochData(dropping.ctx.accelerator, dropping.cfg).steps_per_epoch(dropping.epoch_plan(0)) == 2 * 33
