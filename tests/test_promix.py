"""ProMix in the engine: one step against a float64 formulation written from promix.md, the warm-up, the
selection, exact accumulation, the test outputs and per-sample verdicts, SIGKILL + resume and two gloo processes;
and that the engine takes it without a change (it is reached only through the method registry)."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, TINY, assert_same_weights, run_env, run_train, train_step
from safetensors.torch import load_file

from tcl_lite.config import load_config
from tcl_lite.methods import StepInfo, TrainContext
from tcl_lite.methods.promix.losses import MixDraws
from tcl_lite.methods.promix.method import ProMix

K, B = 10, 16
# 8x8 digits, a narrow CNN with linear heads, 400 samples; train.epochs=4 and start_expand=3: LGA from epoch 2.
SMALL = [*TINY, "method=promix", "model.head=linear", "data.train_subset=400", "promix.warmup_epochs=1",
         "train.epochs=4", "promix.start_expand=3", "promix.w_ramp_epochs=4", "promix.unlabeled_epochs=4"]


def make_method(tmp_path, *overrides: str) -> ProMix:
    from accelerate import Accelerator

    from tcl_lite.data import build_data
    from tcl_lite.engine.run_setup import build_networks, build_optimizers, prepare

    # the per-sample views (the reference's path): the steps below take the collated batch as the engine hands it
    cfg = load_config(None, [*SMALL, f"train.batch_size={B}", "data.augment_on=workers", *overrides])
    acc = Accelerator(cpu=True)
    data = build_data(cfg.data, cfg.seed, reference=ProMix.normalization)
    torch.manual_seed(0)
    nets = build_networks(cfg, ProMix, data)
    models, optimizers = prepare(acc, nets, build_optimizers(cfg, nets, 0.1))
    return ProMix(TrainContext(cfg, acc, models, optimizers, data, tmp_path))


def fixed_batch(method: ProMix) -> dict:
    """B samples under the weak and the RandAugment view, drawn once (the views' draws fixed by the epoch key)."""
    ds = method._two_views
    ds.set_epoch(5)
    return torch.utils.data.default_collate([ds[i] for i in range(0, 2 * method.cfg.train.batch_size, 2)])


def constructed_state(method: ProMix, batch: dict) -> None:
    """CSS keeps 4 of the batch for net1 and 3 for net2; priors far from uniform."""
    n = len(method.noisy)
    index = batch["index"]
    method.css = {"net1": torch.zeros(n, dtype=torch.bool), "net2": torch.zeros(n, dtype=torch.bool)}
    method.css["net1"][index[[0, 3, 5, 9]]] = True
    method.css["net2"][index[[1, 3, 12]]] = True
    g = torch.Generator().manual_seed(3)
    for key in method.priors:
        p = torch.rand(K, generator=g) + 0.2
        method.priors[key] = p / p.sum()


def fake_draws(info, net_index, t, x) -> dict:
    """Injected mixing draws: fixed lambdas, permutations and FMix masks (a function of |C| only)."""
    n, s = t.n_labeled, x.shape[-1]
    stripes = (torch.arange(s)[None, :] + torch.arange(s)[:, None] * (1 + net_index)) % 3 == 0
    return {"h": MixDraws(0.7, torch.arange(n).flip(0), 0.4, torch.arange(n).roll(1), stripes.double()),
            "ap": MixDraws(0.6, torch.arange(n).roll(2), 0.55, torch.arange(n).flip(0), (~stripes).double())}


# -- the independent formulation, from promix.md, in float64 -----------------------------------------------------


def soft_ce(z, t) -> float:
    p = torch.softmax(z.detach(), dim=0)
    return -float(sum(t[k] * torch.log(p[k]) for k in range(K)))


def reference_selection(z1, z2, y, css, pi_l, pi_u, *, tau, cap, b, temp, lga):
    """MHCS, LGA (its cap and order), the targets and the sharpened pseudo-labels, sample by sample."""
    p1, p2 = torch.softmax(z1, 1), torch.softmax(z2, 1)
    chosen = [bool(css[i]) or float(p1[i, y[i]]) > tau for i in range(B)]
    targets = torch.zeros(B, K, dtype=torch.float64)
    for i in range(B):
        debiased = torch.softmax(z1[i] - b * torch.log(pi_l), 0)
        targets[i, int(y[i]) if chosen[i] else int(debiased.argmax())] = 1.0
    if lga and sum(chosen) / B < cap:
        candidates = [i for i in range(B) if not chosen[i] and p1[i].max() > tau and p2[i].max() > tau
                      and p1[i].argmax() == p2[i].argmax()]
        candidates.sort(key=lambda i: -(float(p1[i].max()) + float(p2[i].max())) / 2)
        for i in candidates[:int(B * cap) - sum(chosen)]:
            chosen[i] = True
    q = torch.softmax(z1 - b * torch.log(pi_u), 1) ** (1 / temp)
    q = q / q.sum(1, keepdim=True)
    return chosen, targets, q


def reference_net1(method: ProMix, batch: dict, epoch: int) -> dict:
    """Network 1's terms, total, gradient and new priors, written from promix.md."""
    p, net1, net2 = method.pcfg, method.ctx.models["net1"], method.ctx.models["net2"]
    (x, xs), y, index = batch["image"], batch["label"], batch["index"]
    pi = {k: v.double() for k, v in method.priors.items()}
    a, w = p.debias_output, min(epoch / p.w_ramp_epochs, 1.0)
    beta = 0.1 * min(epoch / p.unlabeled_epochs, 1.0)
    with torch.no_grad():
        z1, z2 = net1(x).logits, net2(x).logits
    chosen, targets, q = reference_selection(
        z1, z2, y, method.css["net1"][index], pi["l_net1"], pi["u_net1"], tau=p.tau, cap=p.lga_cap, b=p.debias_pl,
        temp=p.temperature, lga=epoch > method.cfg.train.epochs - p.start_expand)
    c = [i for i in range(B) if chosen[i]]
    u = [i for i in range(B) if not chosen[i]]
    draws = fake_draws(None, 0, type("T", (), {"n_labeled": len(c)}), x)
    terms = {}
    for head in ("h", "ap"):
        def out(images, head=head):
            o = net1(images)
            return o.logits if head == "h" else o.heads["pseudo"]

        zx, zs = out(x), out(xs)
        shift = a * torch.log(pi["l_net1"])
        terms[f"{head}_ce"] = sum(soft_ce(zx[i] + shift, targets[i]) for i in c) / len(c)
        terms[f"{head}_cr"] = sum(soft_ce(zs[i] + shift, targets[i]) for i in c) / len(c)
        d, xc, tc = draws[head], x[c], targets[c]
        zm = out(d.mixup_lam * xc + (1 - d.mixup_lam) * xc[d.mixup_perm])
        tm = d.mixup_lam * tc + (1 - d.mixup_lam) * tc[d.mixup_perm]
        terms[f"{head}_mix"] = sum(soft_ce(zm[j] + shift, tm[j]) for j in range(len(c))) / len(c)
        zf = out(d.fmix_mask * xc + (1 - d.fmix_mask) * xc[d.fmix_perm])
        ya, yb = tc.argmax(1), tc[d.fmix_perm].argmax(1)
        terms[f"{head}_fmix"] = sum(d.fmix_lam * soft_ce(zf[j] + shift, F.one_hot(ya[j], K))
                                    + (1 - d.fmix_lam) * soft_ce(zf[j] + shift, F.one_hot(yb[j], K))
                                    for j in range(len(c))) / len(c)
        if head == "ap":
            shift_u = a * torch.log(pi["u_net1"])
            terms["ap_u"] = sum(soft_ce(zx[i] + shift_u, q[i]) + w * soft_ce(zs[i] + shift_u, q[i]) for i in u) / len(u)
    total = beta * terms["ap_u"] + sum(
        terms[f"{h}_ce"] + w * (terms[f"{h}_cr"] + terms[f"{h}_mix"] + terms[f"{h}_fmix"]) for h in ("h", "ap"))
    grads = _reference_gradient(net1, x, xs, c, u, targets, q, draws, pi, a, w, beta)
    probs = torch.softmax(z1, 1)
    m = p.prior_momentum
    priors = {"l_net1": m * pi["l_net1"] + (1 - m) * probs[c].mean(0),
              "u_net1": m * pi["u_net1"] + (1 - m) * probs[u].mean(0)}
    return {"chosen": chosen, "targets": targets, "q": q, "terms": terms, "total": total, "grads": grads,
            "priors": priors}


def _reference_gradient(net1, x, xs, c, u, targets, q, draws, pi, a, w, beta) -> list[torch.Tensor]:
    """d(total)/d(params) of network 1, the total as tensor expressions of the same formulas."""
    net1.zero_grad(set_to_none=True)

    def ce(z, t):
        return -(t * torch.log_softmax(z, 1)).sum(1)

    total = 0.0
    for head in ("h", "ap"):
        def out(images, head=head):
            o = net1(images)
            return o.logits if head == "h" else o.heads["pseudo"]

        shift = a * torch.log(pi["l_net1"])
        zx, zs = out(x), out(xs)
        d, xc, tc = draws[head], x[c], targets[c]
        zm = out(d.mixup_lam * xc + (1 - d.mixup_lam) * xc[d.mixup_perm])
        zf = out(d.fmix_mask * xc + (1 - d.fmix_mask) * xc[d.fmix_perm])
        tm = d.mixup_lam * tc + (1 - d.mixup_lam) * tc[d.mixup_perm]
        fa, fb = F.one_hot(tc.argmax(1), K).double(), F.one_hot(tc[d.fmix_perm].argmax(1), K).double()
        total = total + ce(zx[c] + shift, tc).mean() + w * (
            ce(zs[c] + shift, tc).mean() + ce(zm + shift, tm).mean()
            + (d.fmix_lam * ce(zf + shift, fa) + (1 - d.fmix_lam) * ce(zf + shift, fb)).mean())
        if head == "ap":
            shift_u = a * torch.log(pi["u_net1"])
            total = total + beta * (ce(zx[u] + shift_u, q[u]).mean() + w * ce(zs[u] + shift_u, q[u]).mean())
    total.backward()
    return [p.grad.clone() for p in net1.parameters()]


def test_step_of_network_1_matches_a_float64_formulation(tmp_path, fresh_accelerate, monkeypatch):
    method = make_method(tmp_path, "promix.tau=0.13")
    for net in method.ctx.models.values():
        net.double()
    batch = fixed_batch(method)
    batch["image"] = [v.double() for v in batch["image"]]
    constructed_state(method, batch)
    monkeypatch.setattr(method, "_draws", fake_draws)
    captured: dict = {}
    original = ProMix._net_backward

    def recording(name, draws, x, xs, t, w, beta):
        captured[name] = (t, original(method, name, draws, x, xs, t, w, beta))
        return captured[name][1]

    monkeypatch.setattr(method, "_net_backward", recording)
    states = {n: {k: v.clone() for k, v in m.state_dict().items()} for n, m in method.ctx.models.items()}
    priors_before = {k: v.clone() for k, v in method.priors.items()}
    epoch = 2  # LGA on (epoch > 4 - 3), w = 0.5, beta = 0.05
    logs = train_step(method, batch, StepInfo(epoch, 3, 60, 25, "train"))
    grads = [p.grad.clone() for p in method.ctx.models["net1"].parameters()]
    priors_after = method.priors
    for name, net in method.ctx.models.items():
        net.load_state_dict(states[name])
    method.priors = priors_before
    ref = reference_net1(method, batch, epoch)

    t, terms = captured["net1"]
    assert t.labeled.tolist() == ref["chosen"]
    assert 4 < sum(ref["chosen"]) < B, "the constructed case selects by CSS, MHCS and LGA, and leaves some in U"
    assert torch.equal(t.targets, ref["targets"])
    assert torch.allclose(t.pseudo, ref["q"], rtol=1e-12, atol=1e-14)
    for key, value in ref["terms"].items():
        assert float(terms[key]) == pytest.approx(value, rel=1e-9), key
    assert float(terms["total"]) == pytest.approx(float(ref["total"]), rel=1e-9)
    assert float(logs["net1"]) == pytest.approx(float(ref["total"]), rel=1e-9)
    for got, want in zip(grads, ref["grads"]):
        assert torch.allclose(got, want, rtol=1e-7, atol=1e-12)
    for key in ("l_net1", "u_net1"):
        assert torch.allclose(priors_after[key].double(), ref["priors"][key], rtol=1e-6, atol=0)
        assert priors_after[key].dtype == torch.float32  # as the reference's priors


def test_selection_is_each_networks_own_class_wise_small_loss(tmp_path, fresh_accelerate, monkeypatch):
    method = make_method(tmp_path, "promix.rho_start=0.2", "promix.rho_end=0.6", "promix.rho_ramp_epochs=4")
    n = len(method.noisy)
    g = torch.Generator().manual_seed(1)
    losses = {"net1": torch.rand(n, generator=g), "net2": torch.rand(n, generator=g)}
    logits = {"net1": torch.randn(n, K, generator=g), "net2": torch.randn(n, K, generator=g)}
    calls = iter(("net1", "net2"))

    def loss_pass(net, features=False):
        name = next(calls)
        assert net is method.ctx.models[name]
        return (losses[name], logits[name], torch.zeros(n, 4)) if features else (losses[name], logits[name])

    monkeypatch.setattr(method, "_loss_pass", loss_pass)
    method.begin_epoch(2)  # rho = 0.2 + 0.4 * 2 / 4 = 0.4: ceil(0.4 * 400 / 10) = 16 per noisy class
    for name in ("net1", "net2"):
        for k in range(K):
            members = (method.noisy == k).nonzero().squeeze(1)
            kept = members[method.css[name][members]]
            assert len(kept) == min(16, len(members))
            assert losses[name][kept].max() <= losses[name][members[~method.css[name][members]]].min()
    assert not torch.equal(method.css["net1"], method.css["net2"]), "no exchange: each network's own losses"
    pi = {k: v.cpu() for k, v in method.priors.items()}
    mean = sum(torch.softmax(logits[m] - 0.8 * torch.log(pi[f"l_{m}"]), 1) for m in ("net1", "net2"))
    assert torch.equal(method.predicted, mean.argmax(1))
    out = ProMix.per_sample_outputs(method.state_dict())
    both = method.css["net1"] & method.css["net2"]
    assert np.array_equal(out["clean_probability"] == 1.0, both.numpy())
    assert np.array_equal(out["suggested_label"], method.predicted.numpy())
    assert method.epoch_plan(0)[0].role == "warmup" and method.epoch_plan(1)[0].loaders[""].drop_last


def test_warm_up_trains_h_of_both_networks_and_leaves_h_ap_alone(tmp_path, fresh_accelerate):
    method = make_method(tmp_path, "train.batch_size=12", "promix.warmup_penalty=on")
    plan = method.epoch_plan(0)
    loader = plan[0].loaders[""]
    assert plan[0].role == "warmup" and not loader.drop_last  # 400 = 33 x 12 + 4: the partial batch kept
    ds = loader.dataset
    ds.set_epoch(0)
    batch = torch.utils.data.default_collate([ds[i] for i in range(12)])
    nets = method.ctx.models
    with torch.no_grad():
        expected = 0.0
        for net in nets.values():
            z = net(batch["image"]).logits
            zc = z.clamp(min=1e-12)  # the negative entropy on clamped logits, as the reference's
            expected += F.cross_entropy(z, batch["label"]) + (zc.softmax(1) * zc.log_softmax(1)).sum(1).mean()
    logs = train_step(method, batch, StepInfo(0, 0, 0, 34, "warmup", role="warmup"))
    total = sum(float(v) for k, v in logs.items() if k != "loss")
    assert float(logs["loss"]) == pytest.approx(float(expected), rel=1e-5)
    assert float(logs["loss"]) == pytest.approx(total, rel=1e-6)
    for net in nets.values():
        assert all(p.grad is None for p in net.heads["pseudo"].parameters()), "h_AP gets no gradient"
        assert all(p.grad is not None for p in net.classifier.parameters())


def _step_grads(method: ProMix, micro: int, half_clean: bool = False) -> tuple[float, list[torch.Tensor], dict]:
    batch = fixed_batch(method)
    constructed_state(method, batch)
    if half_clean:  # CSS keeps half the batch (as rho 0.5 does), so the mixing forwards are not of 2 images
        method.css["net1"][batch["index"][::2]] = True
        method.css["net2"][batch["index"][1::2]] = True
    for opt in method.ctx.optimizers.values():
        opt.zero_grad(set_to_none=True)
    logs = train_step(method, batch, StepInfo(2, 3, 60, 25, "train"), micro)
    grads = [p.grad.clone() for net in method.ctx.models.values() for p in net.parameters()]
    return float(logs["loss"]), grads, {k: v.clone() for k, v in method.priors.items()}


def test_accumulation_gives_the_whole_batch_step(tmp_path, fresh_accelerate):
    """Group norm: 1, 2 and 4 micro-batches give the same loss, gradient and priors (the selection made once on
    the whole batch, every term a sum divided by the whole batch's |C| or |U|)."""
    method = make_method(tmp_path, "model.norm=group", "promix.tau=0.13")
    (l1, g1, p1), *rest = [_step_grads(method, micro) for micro in (1, 2, 4)]
    for loss, grads, priors in rest:
        assert loss == pytest.approx(l1, rel=1e-6)
        for a, b in zip(g1, grads):
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)
        for k in p1:
            assert torch.allclose(p1[k], priors[k], atol=1e-7)


def test_accumulation_with_batchnorm_differs_by_its_statistics_only(tmp_path, fresh_accelerate):
    """BatchNorm normalises each micro-batch by its own statistics (the named difference): at batch 64, 16 px,
    with a selection that does not depend on them (tau 0.99: CSS alone), the loss stays within 1% and the
    gradient's direction within a bounded angle (measured at initialisation: cosine 0.84-0.90)."""
    method = make_method(tmp_path, "model.norm=batch", "promix.tau=0.99", "data.image_size=16", "train.batch_size=64")
    (l1, g1, _), *rest = [_step_grads(method, micro, half_clean=True) for micro in (1, 2, 4)]
    whole = torch.cat([g.flatten() for g in g1])
    for loss, grads, _ in rest:
        assert loss == pytest.approx(l1, rel=0.01)
        assert F.cosine_similarity(whole, torch.cat([g.flatten() for g in grads]), dim=0) > 0.8


def test_test_outputs_and_the_inference_model(tmp_path, fresh_accelerate):
    method = make_method(tmp_path, "promix.eval_output=mean_h")
    x = fixed_batch(method)["image"][0]
    models = method.eval_models()
    assert set(models) == {"", "net1_ap", "net2_ap"}
    nets = {n: m.eval() for n, m in method.ctx.models.items()}
    with torch.no_grad():
        a, b = nets["net1"](x), nets["net2"](x)
        assert torch.equal(models[""](x).logits, (a.logits + b.logits) / 2)
        assert torch.equal(models["net2_ap"](x).logits, b.heads["pseudo"])
        assert torch.equal(ProMix.inference_model(nets)(x).logits, a.heads["pseudo"])  # the reported output


# -- through train.py ----------------------------------------------------------------------------

RUN = [*SMALL, "data.train_subset=256", "train.batch_size=16", "optim.lr=0.05", "optim.scale_lr=false",
       "train.epochs=3", "optim.schedule_unit=epoch", "promix.tau=0.5"]
FEATURES = ["train.gradient_accumulation_steps=2", "train.activation_checkpointing=true", "optim.name=sgd8bit",
            "checkpoint.every_steps=2"]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("promix") / "reference"
    run_train(*RUN, *FEATURES, f"output_dir={out}")
    return out


def _final(run_dir) -> dict:
    step = sorted((run_dir / "checkpoints").glob("step_*"))[-1]
    return {"net1": load_file(str(step / "model.safetensors")), "net2": load_file(str(step / "model.net2.safetensors")),
            "state": load_file(str(step / "method.safetensors"))}


def test_a_run_trains_both_networks_and_both_heads(reference_run):
    records = [json.loads(line) for line in (reference_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert "css_fraction" not in records[0] and records[-1]["css_fraction"] == pytest.approx(0.5, abs=0.02)
    assert {"test_acc", "net2_ap_test_acc", "mean_h_test_acc", "detection_auc"} <= set(records[-1])
    final = _final(reference_run)
    assert {"heads.pseudo.weight", "classifier.weight"} <= set(final["net1"])
    assert not torch.equal(final["net1"]["heads.pseudo.weight"], final["net2"]["heads.pseudo.weight"])
    state = final["state"]
    assert all(not torch.allclose(state[f"t.prior_{k}"], torch.full((K,), 0.1)) for k in ("l_net1", "u_net2"))


def test_sigkill_after_the_warm_up_then_resume_is_bit_identical(reference_run, tmp_path):
    from test_resume import _kill_when

    out = tmp_path / "killed"
    warmup_steps = 16  # 256 / 16 batches of the warm-up epoch
    _kill_when(out, r"step_0000002[0-8]", [*RUN, *FEATURES])  # in epoch 2 (steps 17..32)
    newest = max((out / "checkpoints").glob("step_*"), key=lambda p: p.name)
    trainer = json.loads((newest / "trainer.json").read_text())
    assert trainer["global_step"] > warmup_steps and trainer["epoch"] >= 1 and trainer["step_in_epoch"] > 0, trainer
    run_train(*RUN, *FEATURES, f"output_dir={out}", "--resume")
    a, b = _final(out), _final(reference_run)
    for key in a:  # both networks with both heads, the priors, the selection
        assert_same_weights(a[key], b[key])


def test_two_gloo_processes_end_with_identical_networks(tmp_path):
    if shutil.which("accelerate") is None:
        pytest.skip("accelerate CLI not on PATH")
    from test_distributed import two_processes_end_identical

    w0, log = two_processes_end_identical(tmp_path / "ddp", *SMALL, "train.batch_size=16", "train.epochs=2")
    assert "0.heads.pseudo.weight" in w0
    assert re.search(r"ProMix selection, epoch 2: rho 0.500", log)


# -- the engine takes the method without a change ------------------------------------------------------


def test_the_engine_never_names_promix_and_reaches_it_only_through_the_registry():
    engine = sorted((ROOT / "tcl_lite" / "engine").rglob("*.py"))
    assert engine and not [p.name for p in engine if "promix" in p.read_text().lower()]
    importers = [p.relative_to(ROOT).as_posix() for p in (ROOT / "tcl_lite").rglob("*.py")
                 if "methods.promix" in p.read_text() and "methods/promix/" not in p.as_posix()]
    assert importers == ["tcl_lite/methods/__init__.py"], importers  # the registration line
    code = ("import sys, tcl_lite; tcl_lite.register_builtins(); import tcl_lite.engine.trainer\n"
            "assert 'tcl_lite.methods.promix.method' not in sys.modules\n"
            "from tcl_lite.methods import get_method; print(get_method('promix').__module__)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=run_env(), capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "tcl_lite.methods.promix.method", proc.stderr[-2000:]


def test_the_method_is_five_files_and_no_layer_above_it_names_it():
    """ProMix is methods/promix/ (four files) and its registration in methods/__init__.py; outside methods/ only
    the data and model registries' entries name it (its view kind, its network, its normalisation set) and help
    text; the layers above the methods (engine, planner, results, inference, CLI, run logs) never do."""
    named = {p.relative_to(ROOT).as_posix() for p in (ROOT / "tcl_lite").rglob("*.py")
             if "promix" in p.read_text().lower()}
    method_files = {p for p in named if p.startswith("tcl_lite/methods/")}
    assert method_files == {"tcl_lite/methods/__init__.py", *(f"tcl_lite/methods/promix/{f}.py" for f in
                                                             ("__init__", "config", "losses", "method"))}
    above = ("engine", "plan", "results", "inference", "cli", "runlog", "checkpoints", "algorithms")
    assert not [p for p in named if p.split("/")[1] in above], named
    # and the package's one-line description (tcl_lite/__init__.py's docstring) lists every method
    assert {p.split("/")[1] for p in named - method_files} <= {"data", "models", "config.py", "__init__.py"}, named


def test_cifar_n_presets_read_their_key_from_a_label_file(tmp_path):
    """Each CIFAR-N preset's key, read from a synthetic .pt dict of the CIFAR-N keys (no download)."""
    from tcl_lite.data.noise import read_label_file
    from tcl_lite.presets import find_preset
    from tcl_lite.registry import METHODS

    rng = np.random.default_rng(0)
    keys = ("aggre_label", "random_label1", "worse_label", "noisy_label", "clean_label")
    table = {k: torch.from_numpy(rng.integers(0, 100, 50000)) for k in keys}
    torch.save(table, tmp_path / "human.pt")
    names = [p for m in METHODS for p in METHODS[m].presets if "cifar10n_" in p or "cifar100n_" in p]
    assert len(names) == 16  # ProMix, TCL, DivideMix and CE on CIFAR-10N aggre/rand1/worst and CIFAR-100N
    for name in names:
        data = load_config(find_preset(name)).data
        assert data.noise_type == "file" and data.noise_key in keys[:4]
        assert data.dataset == ("cifar100" if "cifar100n" in name else "cifar10")
        labels = read_label_file(str(tmp_path / "human.pt"), 50000, 100, data.noise_key).labels
        assert np.array_equal(labels, table[data.noise_key].numpy())
    assert math.isclose(load_config(find_preset("cifar100n_promix")).promix.tau, 0.95)


def test_state_round_trips_and_a_foreign_state_is_refused(tmp_path, fresh_accelerate):
    from tcl_lite.errors import CheckpointError

    method = make_method(tmp_path)
    constructed_state(method, fixed_batch(method))
    method.selections = 3
    state = method.state_dict()
    other = make_method(tmp_path)
    other.load_state_dict(state)
    restored = other.state_dict()
    assert restored.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(restored[key], value) if torch.is_tensor(value) else restored[key] == value
    with pytest.raises(CheckpointError, match="no ProMix state"):
        other.load_state_dict({"prob_net1": torch.ones(400)})
    with pytest.raises(CheckpointError, match=r"shapes prior_l_net1 \(9,\) \(expected \(10,\)\)"):
        other.load_state_dict({**state, "prior_l_net1": torch.ones(9)})
    with pytest.raises(CheckpointError, match="missing selections"):
        other.load_state_dict({k: v for k, v in state.items() if k != "selections"})
