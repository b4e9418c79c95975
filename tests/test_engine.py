"""Engine parts: 8-bit optimizers, bf16 autocast, exact accumulation, LR schedule, batch splitting."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import train_step

from tcl_lite.algorithms.accumulate import split_batch
from tcl_lite.config import load_config
from tcl_lite.engine.optim import build_optimizer, lr_at


def _tiny_model(**model):
    from tcl_lite.models.network import build_model

    cfg = load_config(None, [f"model.{k}={v}" for k, v in model.items()])
    torch.manual_seed(0)
    return build_model(cfg.model, 10, in_channels=3, image_size=8)


def _fixed_batch(n=64):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("name", ["sgd8bit", "adamw8bit"])
def test_8bit_optimizer_state_is_uint8_and_loss_falls(name):
    model = _tiny_model(width=16)
    cfg = load_config(None, [f"optim.name={name}", "optim.weight_decay=0"])
    opt = build_optimizer(cfg.optim, model, lr=0.05 if name == "sgd8bit" else 3e-3)
    assert type(opt).__module__.startswith("bitsandbytes"), "the real bitsandbytes optimizer, not a fallback"
    x, y = _fixed_batch()
    losses = []
    for _ in range(25):
        loss = F.cross_entropy(model(x).logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    big = [p for p in model.parameters() if p.numel() >= 4096]  # bitsandbytes keeps 32-bit state below 4096
    assert big
    for p in big:
        assert opt.state[p]["state1"].dtype == torch.uint8
    assert losses[-1] < 0.5 * losses[0], losses


def test_bf16_autocast_on_cpu_trains(fresh_accelerate):
    from accelerate import Accelerator

    acc = Accelerator(cpu=True, mixed_precision="bf16")
    model = _tiny_model(width=16)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model, opt = acc.prepare(model, opt)
    seen = []
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    x, y = _fixed_batch()
    losses = []
    for _ in range(25):
        loss = F.cross_entropy(model(x).logits, y)
        opt.zero_grad()
        acc.backward(loss)
        opt.step()
        losses.append(loss.item())
    assert seen[0] == torch.bfloat16, "the forward runs under bf16 autocast"
    assert all(math.isfinite(v) for v in losses) and losses[-1] < 0.5 * losses[0], losses


def test_accumulating_4_micro_batches_equals_one_batch(fresh_accelerate, tmp_path):
    """CE's training_step over 4 micro-batches gives the one-batch gradient.

    The model has no batch-dependent layer (GroupNorm, LayerNorm heads, no dropout); the
    tolerance (1e-6 absolute, 1e-5 relative) covers float32 summation order only.
    """
    from accelerate import Accelerator

    from tcl_lite.data import build_data
    from tcl_lite.methods import StepInfo, TrainContext
    from tcl_lite.methods.ce.method import CrossEntropy

    cfg = load_config(None, ["model.norm=group", "model.dropout=0", "data.image_size=8", "model.width=8"])
    acc = Accelerator(cpu=True)
    data = build_data(cfg.data, cfg.seed)
    model = _tiny_model(norm="group", dropout=0, width=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model, opt = acc.prepare(model, opt)
    method = CrossEntropy(TrainContext(cfg, acc, model, opt, data, tmp_path))
    ds = data.train_views(("weak",))
    batch = torch.utils.data.default_collate([ds[i] for i in range(32)])
    info = StepInfo(0, 0, 0, 1)

    def grads(micro: int):
        opt.zero_grad(set_to_none=True)
        logs = train_step(method, batch, info, micro)
        return [p.grad.clone() for p in model.parameters()], logs["loss"]

    g1, l1 = grads(1)
    g4, l4 = grads(4)
    assert torch.allclose(l1, l4, atol=1e-6)
    for a, b in zip(g1, g4):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)


def test_split_batch_handles_multi_view_lists():
    batch = {"index": torch.arange(8), "image": [torch.zeros(8, 3), torch.ones(8, 3)], "label": torch.arange(8)}
    parts = split_batch(batch, 4)
    assert len(parts) == 4 and parts[1]["index"].tolist() == [2, 3]
    assert isinstance(parts[0]["image"], list) and parts[0]["image"][1].shape == (2, 3)
    assert parts[3]["image"][1].sum() == 6


def test_lr_schedule_matches_the_reference_formula():
    cfg = load_config(None, ["optim.warmup_epochs=20", "optim.min_lr_ratio=0.01"]).optim
    max_lr = 0.12
    assert lr_at(cfg, max_lr, 0.0, 200) == 0.0
    assert lr_at(cfg, max_lr, 10.0, 200) == pytest.approx(0.06)
    # after warm-up: min + (max-min)(1+cos(pi (e-20)/200))/2 -- divisor = total epochs, as the reference
    e = 120.5
    expect = 0.0012 + (0.12 - 0.0012) * (1 + math.cos(math.pi * (e - 20) / 200)) / 2
    assert lr_at(cfg, max_lr, e, 200) == pytest.approx(expect)
    step = load_config(None, ["optim.schedule=step", "optim.milestones=[1]", "optim.gamma=0.1"]).optim
    assert lr_at(step, 0.0008, 0.5, 5) == pytest.approx(0.0008)
    assert lr_at(step, 0.0008, 1.0, 5) == pytest.approx(0.00008)


def test_per_epoch_cosine_is_constant_within_an_epoch():
    """ProMix's reference: lr = 5e-5 + (0.05 - 5e-5)(1 + cos(pi e / 600)) / 2 at the epoch's index e."""
    cfg = load_config(None, ["optim.schedule_unit=epoch", "optim.min_lr_ratio=0.001", "optim.warmup_epochs=0"]).optim
    for e in (0, 1, 299, 599):
        expect = 5e-5 + (0.05 - 5e-5) * (1 + math.cos(math.pi * e / 600)) / 2
        assert lr_at(cfg, 0.05, e, 600) == pytest.approx(expect, rel=1e-12)
        assert lr_at(cfg, 0.05, e + 0.999, 600) == lr_at(cfg, 0.05, e, 600)
    per_iteration = load_config(None, ["optim.min_lr_ratio=0.001", "optim.warmup_epochs=0"]).optim
    assert lr_at(per_iteration, 0.05, 1.5, 600) < lr_at(cfg, 0.05, 1.5, 600)


def test_8bit_fallback_warns_when_bitsandbytes_cannot_load(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_bnb(name, *args, **kwargs):
        if name.startswith("bitsandbytes"):
            raise ImportError("simulated: no native library")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bnb)
    cfg = load_config(None, ["optim.name=adamw8bit"])
    with pytest.warns(RuntimeWarning, match="bitsandbytes could not be loaded.*32-bit"):
        opt = build_optimizer(cfg.optim, _tiny_model(), lr=1e-3)
    assert isinstance(opt, torch.optim.AdamW)


def test_out_of_memory_retries_the_step_with_more_micro_batches():
    """A step that runs out of memory above 8 samples per micro-batch (a GPU condition, raised here
    as the real CUDA error type) is retried from the same RNG state with 2x, then 4x micro-batches."""
    from tcl_lite.engine.oom import next_micro_batches, step_adapting_to_oom

    draws, retries, messages = [], [], []

    def step(micro_batches):
        draws.append(torch.rand(1).item())
        if 32 // micro_batches > 8:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return f"ok with {micro_batches}"

    result, micro_batches = step_adapting_to_oom(step, 32, 1, True, lambda: retries.append(1), messages.append)
    assert (result, micro_batches) == ("ok with 4", 4)
    assert len(retries) == 2 and "gradient_accumulation_steps=2" in messages[0]
    assert draws[0] == draws[1] == draws[2], "each retry starts from the same RNG state"
    with pytest.raises(torch.cuda.OutOfMemoryError):
        step_adapting_to_oom(step, 32, 1, False, lambda: None, messages.append)
    assert next_micro_batches(24, 1) == 2 and next_micro_batches(24, 8) == 24 and next_micro_batches(7, 7) is None
