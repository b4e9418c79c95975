"""Parity of one full TCL step with the reference's facts (../shared/reference/tcl.md), in float64.

The expected values come from a plain-PyTorch formulation written here from tcl.md (no tcl_lite loss
function): the reference encoder and heads, K=10, projector 256, on fixed weights and inputs. Both
the 6 loss terms, the total and the gradient norm must agree, during the warm-up (noisy labels) and
after it (corrected targets from planted w and prototypes).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, train_step

from tcl_lite.config import load_config
from tcl_lite.methods import StepInfo, TrainContext
from tcl_lite.methods.tcl.method import TCL

B, K, D, T = 8, 10, 256, 0.25
TERMS = ("contrastive", "cross", "mixed", "align", "entropy", "balance")


def _hand_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Soft-target cross-entropy, mean over rows: -sum_k t_k log softmax(l)_k."""
    return torch.stack([-(t * (row - row.logsumexp(0))).sum() for row, t in zip(logits, targets)]).mean()


def _hand_nt_xent(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """2B rows; each row's positive is the other view of its image, its own similarity excluded."""
    z = torch.cat([z1, z2])
    n = len(z1)
    losses = []
    for i in range(2 * n):
        sims = torch.stack([z[i] @ z[j] / T for j in range(2 * n) if j != i])
        others = [j for j in range(2 * n) if j != i]
        positive = others.index((i + n) % (2 * n))
        losses.append(sims.logsumexp(0) - sims[positive])
    return torch.stack(losses).mean()


def reference_step(model, weak, s1, s2, y, w, mu, scale, warm: bool, seed: int) -> tuple[dict, float]:
    """One training step as tcl.md states it; returns the terms, the total and the gradient norm."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    lam = float(torch.distributions.Beta(1.0, 1.0).sample())
    lam = max(lam, 1 - lam)
    x3 = torch.cat([weak, s1, s2])
    perm = torch.randperm(3 * B)
    mixed = lam * x3 + (1 - lam) * x3[perm]
    out = model(torch.cat([weak, mixed, s1, s2]))  # one forward over 6B images
    _, l_mix, l_1, l_2 = out.logits.split([B, 3 * B, B, B])
    _, v_mix, v_1, v_2 = out.proj.split([B, 3 * B, B, B])
    y1h = F.one_hot(y, K).double()
    if warm:
        t1 = t2 = base = y1h
    else:
        p1, p2 = l_1.detach().softmax(1), l_2.detach().softmax(1)
        ws = (w * scale)[:, None]
        t1 = (1 - ws) * p2 + ws * y1h  # strong1 learns from the OTHER view's prediction
        t2 = (1 - ws) * p1 + ws * y1h
        base = (1 - ws) * (p1 + p2) / 2 + ws * y1h
    tiled = base.repeat(3, 1)
    mixed_t = lam * tiled + (1 - lam) * tiled[perm]
    allp = torch.cat([l_1, l_2, l_mix]).softmax(1)
    pbar = allp.mean(0)
    terms = {
        "contrastive": _hand_nt_xent(v_1, v_2),
        "cross": _hand_ce(l_1, t1) + _hand_ce(l_2, t2),
        "mixed": _hand_ce(l_mix, mixed_t),
        "align": _hand_ce(v_mix @ mu.T / T, mixed_t),
        "entropy": -(allp * allp.log()).sum(1).mean(),
        "balance": (pbar * pbar.log()).sum(),
    }
    total = sum(terms.values())
    total.backward()
    grad_norm = torch.sqrt(sum(p.grad.square().sum() for p in model.parameters() if p.grad is not None))
    return {**{k: float(v.detach()) for k, v in terms.items()}, "loss": float(total.detach())}, float(grad_norm)


@pytest.fixture(scope="module")
def tcl_step(tmp_path_factory):
    """The TCL method on the reference encoder in float64, and a fixed batch of real digits images."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    from tcl_lite.data import build_data
    from tcl_lite.models.network import build_model

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    cfg = load_config(ROOT / "configs" / "cifar10_tcl.yaml",
                      ["data.dataset=digits", "data.image_size=8", "data.num_workers=0"])
    acc = Accelerator(cpu=True)
    data = build_data(cfg.data, cfg.seed)
    torch.manual_seed(0)
    model = build_model(cfg.model, data.num_classes, in_channels=3, image_size=8, with_projector=True).double()
    assert sum(p.numel() for p in model.parameters()) == 11_831_518
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model, opt = acc.prepare(model, opt)
    method = TCL(TrainContext(cfg, acc, model, opt, data, tmp_path_factory.mktemp("parity")))
    ds = data.train_views(TCL.views)
    batch = torch.utils.data.default_collate([ds[i] for i in range(B)])
    batch["image"] = [v.double() for v in batch["image"]]
    g = torch.Generator().manual_seed(1)
    method.clean_probability = torch.rand(len(data.noisy_labels), generator=g)
    method.prototypes = F.normalize(torch.randn(K, D, generator=g), dim=1)
    method.est_clean_fraction = 0.6
    yield method, batch
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.mark.parametrize("epoch,warm", [(18, True), (19, False)])
def test_one_tcl_step_matches_the_reference_formulation(tcl_step, epoch: int, warm: bool):
    method, batch = tcl_step
    model = method.ctx.model
    state = {k: v.clone() for k, v in model.state_dict().items()}  # BatchNorm statistics move per forward
    # the preset's warm-up: 19 epochs on the noisy labels (0..18), corrected targets from epoch index 19
    assert method.tcfg.warmup_epochs == 19

    model.zero_grad(set_to_none=True)
    torch.manual_seed(7)
    logs = train_step(method, batch, StepInfo(epoch, 0, 0, 1))
    ours = {k: float(logs[k]) for k in (*TERMS, "loss")}
    our_norm = float(torch.sqrt(sum(p.grad.square().sum() for p in model.parameters())))
    assert float(logs["warmup"]) == float(warm)

    model.load_state_dict(state)
    idx = batch["index"]
    expected, norm = reference_step(model, *batch["image"], batch["label"], method.clean_probability[idx].double(),
                                    method.prototypes.double(), method.est_clean_fraction, warm, seed=7)
    for key in (*TERMS, "loss"):
        assert ours[key] == pytest.approx(expected[key], rel=1e-10, abs=1e-12), key
    assert our_norm == pytest.approx(norm, rel=1e-9)
    assert all(abs(v) > 1e-6 for v in expected.values())  # every term really exercised


def test_tcl_cifar_presets_use_the_reference_encoder_and_warmup():
    for preset in sorted((ROOT / "configs").glob("cifar*_tcl*.yaml")):
        cfg = load_config(preset)
        assert cfg.model.arch == "preact_resnet18", preset.name
        assert (cfg.tcl.warmup_epochs, cfg.optim.warmup_epochs) == (19, 20), preset.name
        assert cfg.tcl.gmm_dtype == "float32", preset.name
