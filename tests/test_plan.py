"""``tcl-lite plan``: the traced memory against hand counts and against a measured step, FLOPs against hand
counts, every preset planned for a T4, ``train.gradient_accumulation_steps=auto``, and the device check on
a fake GPU (which catches a tensor made on the wrong device)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import ROOT, TINY, run_env
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

import tcl_lite.methods  # noqa: F401 - registers the built-in methods
from tcl_lite.config import load_config
from tcl_lite.errors import ConfigError
from tcl_lite.methods import METHODS, register
from tcl_lite.methods.base import Method
from tcl_lite.plan.dataset_meta import dataset_meta
from tcl_lite.plan.fit import choose_micro_batches, verdict
from tcl_lite.plan.gpus import GPU, GPUS
from tcl_lite.plan.planner import make_plan
from tcl_lite.plan.runs import RunTracer, Settings
from tcl_lite.plan.trace import trace
from tcl_lite.presets import available_presets

sys.path.insert(0, str(ROOT / "bench"))
import step_memory  # noqa: E402 - bench/ is not a package

F32 = 4  # bytes


def test_categories_equal_a_hand_count():
    """An MLP's forward with a graph: while ReLU runs, Linear(a, h)'s output and ReLU's (which backward
    keeps) are both alive, and nothing else; SGD's momentum is one copy of the weights."""
    B, a, h, c = 32, 64, 256, 10
    with FakeTensorMode():
        model = nn.Sequential(nn.Linear(a, h), nn.ReLU(), nn.Linear(h, c))
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
        opt.zero_grad(set_to_none=True)
        x = torch.randn(B, a)
        t = trace("mlp forward", lambda: model(x), modules=[model], optimizers=[opt], batch=x)
    weights = (a * h + h + h * c + c) * F32
    assert t.peak == {"weights": weights, "gradients": 0, "optimizer state": weights, "activations": 2 * B * h * F32,
                      "gradient cache": 0, "temporaries": 0, "batch": B * a * F32, "method state": 0}
    assert t.resident == 2 * weights + B * a * F32
    assert t.flops == 2 * B * (a * h + h * c)  # the two matrix products, 2 FLOPs per multiply-add


def test_flops_equal_hand_counts_for_a_conv_and_the_preact_resnet18_forward():
    conv = {"weights": 0}
    with FakeTensorMode():
        layer = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        x = torch.randn(8, 3, 32, 32)
        conv = trace("conv", lambda: layer(x), modules=[layer], optimizers=[], batch=x)
    assert conv.flops == 2 * 8 * 64 * 32 * 32 * 3 * 3 * 3

    from tcl_lite.models.network import build_model

    cfg = load_config("cifar10_tcl_sym50")
    with FakeTensorMode():
        net = build_model(cfg.model, 10, with_projector=True).eval()
        x = torch.randn(1, 3, 32, 32)
        t = trace("forward", lambda: net(x), modules=[net], optimizers=[], batch=x)

    def conv_flops(cin: int, cout: int, k: int, size: int) -> int:
        return 2 * cout * size * size * cin * k * k

    expected = conv_flops(3, 64, 3, 32)  # stem
    expected += 4 * conv_flops(64, 64, 3, 32)  # layer1: two blocks of two convs
    for cin, cout, size in ((64, 128, 16), (128, 256, 8), (256, 512, 4)):  # layers 2-4
        expected += conv_flops(cin, cout, 3, size) + 3 * conv_flops(cout, cout, 3, size)  # 3x3 convs
        expected += conv_flops(cin, cout, 1, size)  # the 1x1 shortcut
    expected += 2 * (512 * 512 + 512 * 10)  # classifier: Linear(512, 512), Linear(512, K)
    expected += 2 * (512 * 512 + 512 * 256)  # projector: Linear(512, 512), Linear(512, 256)
    assert t.flops == expected  # 1.11 GFLOP


@pytest.mark.parametrize("config", ["naive", "exact"])
def test_cpu_prediction_within_15_percent_of_the_measured_step(config):
    """The quick step_memory configuration (TCL, tiny_cnn 16 px, B=32, micro-batches of 8), measured here:
    the peak of the step's tensor allocations (the profiler's events) against the trace of the same step."""
    shape = type("Shape", (), dict(method="tcl", arch="tiny_cnn", norm="group", width=16, image_size=16, batch=32,
                                   micro=8))
    cfg = load_config(None, step_memory.step_overrides(shape, config))
    rig = step_memory.build_step(cfg, 10)

    def step() -> None:
        rig.step()
        rig.optimizer.step()
        rig.optimizer.zero_grad(set_to_none=False)

    step()  # the optimizer state and the gradients exist before the measured step, as in the bench
    measured = step_memory.allocated_peak(step)
    predicted = step_memory.predicted_step(cfg, 10)["predicted_mib"] * 2**20
    assert abs(predicted / measured - 1) <= 0.15, (predicted, measured)


TINY_PLAN = ["model.arch=tiny_cnn", "model.width=8", "data.image_size=8", "train.eval_batch_size=64"]


@pytest.mark.parametrize("preset", available_presets())
def test_every_preset_is_planned_for_a_t4(preset):
    """Each preset's method, data layout, first kind of epoch and its passes, traced with a tiny encoder
    (every kind is traced in the device check below; the verdict machinery on a full-size run in the
    next test; MLNT with 2 of its synthetic label sets, each of which traces as the others); sizes
    unknown where the data is not on this machine."""
    cfg = load_config(preset, [*TINY_PLAN, "train.epochs=1", *(["mlnt.num_synthetic=2"] if "mlnt" in preset else [])])
    plan = make_plan(cfg, [GPUS["t4"]], name=preset)
    (v,) = plan.verdicts
    assert v.runs and v.fits_as_is and not v.overrides, preset
    assert {s.kind for s in plan.run.steps} == {k.label for k in METHODS[cfg.method].plan_epochs(cfg)}
    assert any("evaluation" in p.label for p in plan.run.passes)


def test_a_run_too_large_for_a_t4_gets_the_smallest_change_that_fits():
    cfg = load_config("cifar10_tcl", ["model.arch=tiny_cnn", "model.width=64", "data.image_size=32",
                                      "train.batch_size=4096", "train.epochs=1"])
    tracer = RunTracer(cfg)
    t4 = GPUS["t4"]
    v = verdict(tracer, t4)
    assert not v.fits_as_is and v.runs and v.change == "more micro-batches"
    n = v.settings.micro_batches
    assert v.overrides == [f"train.gradient_accumulation_steps={n}"] and 4096 % n == 0
    assert v.device_bytes <= t4.memory_bytes
    smaller = max(d for d in range(1, n) if 4096 % d == 0)
    assert verdict(tracer, GPU("big", "", 1e6, 1, 1, 1, 1, 1)).fits_as_is
    from tcl_lite.plan.fit import device_bytes

    assert device_bytes(tracer.run(Settings(smaller, False, "no", "sgd")).peak.peak_bytes) > t4.memory_bytes


def test_a_batch_larger_than_the_data_cannot_run_anywhere_and_says_why():
    proc = subprocess.run([sys.executable, "-m", "tcl_lite", "plan", "--config", "digits_tcl", "--gpu", "all",
                           "train.batch_size=65536", *TINY_PLAN, "--json"], cwd=ROOT, env=run_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert len(plan["gpus"]) == 6 and not any(g["runs"] for g in plan["gpus"])
    for g in plan["gpus"]:
        assert "a batch of 65536 exceeds the 1257 samples" in g["reason"], g["reason"]
    assert plan["problems"]


def test_plan_help_answers_before_torch_is_imported():
    code = ("import sys, tcl_lite.__main__ as m\ntry:\n    m.main(['plan', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=run_env(), capture_output=True, text=True)
    assert out.stdout.strip().endswith("False") and "--gpu" in out.stdout


def test_dataset_meta_without_the_data():
    meta = dataset_meta(load_config("cifar100_tcl_sym50", ["data.root=/nonexistent", "data.val_fraction=0.1"]))
    assert (meta.train, meta.val, meta.test, meta.num_classes, meta.image_size) == (45000, 5000, 10000, 100, 32)
    digits = dataset_meta(load_config(None, ["data.train_subset=500"]))
    assert (digits.train, digits.test, digits.num_classes) == (500, 540, 10)
    folder = dataset_meta(load_config("cifar10_jpeg_ce", ["data.root=/nonexistent"]))
    assert not folder.sizes_known and "--samples" in folder.note


# -- train.gradient_accumulation_steps=auto ----------------------------------------------------------------

AUTO_RUN = [*TINY, "method=tcl", "tcl.warmup_epochs=1", "train.epochs=1", "data.train_subset=256",
            "train.log_every=1000"]


def test_auto_is_validated_early():
    assert load_config(None, ["train.gradient_accumulation_steps=auto"]).train.gradient_accumulation_steps == "auto"
    with pytest.raises(ConfigError, match="'train.gradient_accumulation_steps': 'some' is not allowed; give a number"):
        load_config(None, ["train.gradient_accumulation_steps=some"])
    with pytest.raises(ConfigError, match="'train.memory_budget': '14' is not a memory size"):
        load_config(None, ["train.memory_budget=14"])


def test_auto_picks_a_count_under_the_budget_and_trains_as_that_count_set_by_hand(tmp_path, fresh_accelerate):
    from tcl_lite.engine import train

    cfg = load_config(None, AUTO_RUN)
    tracer = RunTracer(cfg, cpu_workspace=True)
    one, two = (tracer.run(Settings(n, False, "no", "sgd")).peak.peak_bytes for n in (1, 2))
    assert two < one
    budget = (one + two) // 2  # one micro-batch does not fit, two do
    assert choose_micro_batches(tracer, budget, "cpu").settings.micro_batches == 2

    auto = load_config(None, [*AUTO_RUN, "train.gradient_accumulation_steps=auto", f"train.memory_budget={budget}B",
                              f"output_dir={tmp_path / 'auto'}", "train.cpu=true"])
    by_hand = load_config(None, [*AUTO_RUN, "train.gradient_accumulation_steps=2", f"output_dir={tmp_path / 'hand'}",
                                 "train.cpu=true"])
    metrics_auto = train(auto)
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    metrics_hand = train(by_hand)
    assert metrics_auto == metrics_hand
    records = [json.loads(line) for line in (tmp_path / "auto" / "metrics.jsonl").read_text().splitlines()]
    hand = [json.loads(line) for line in (tmp_path / "hand" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["train_loss"] == hand[-1]["train_loss"]
    saved = yaml.safe_load((tmp_path / "auto" / "config.yaml").read_text())
    assert saved["train"]["gradient_accumulation_steps"] == 2  # a resume without --config keeps the count
    log = (tmp_path / "auto" / "train.log").read_text()
    assert "train.gradient_accumulation_steps=auto: 2 micro-batches" in log
    step = sorted((tmp_path / "auto" / "checkpoints").glob("step_*"))[-1]
    assert json.loads((step / "trainer.json").read_text())["settings"]["train.gradient_accumulation_steps"] == 2

    # Resuming keeps the count the run started with, whatever the budget now says (exactness).
    from tcl_lite.engine.micro_batches import resolve_auto_micro_batches

    again = load_config(None, [*AUTO_RUN, "train.gradient_accumulation_steps=auto", "train.memory_budget=64GiB"])
    messages: list[str] = []
    resolve_auto_micro_batches(again, torch.device("cpu"), step, messages.append)
    assert again.train.gradient_accumulation_steps == 2 and "as the run was started with" in messages[0]
    fresh = load_config(None, [*AUTO_RUN, "train.gradient_accumulation_steps=auto", "train.memory_budget=64GiB"])
    resolve_auto_micro_batches(fresh, torch.device("cpu"), None, messages.append)
    assert fresh.train.gradient_accumulation_steps == 1  # 64 GiB: the whole batch at once


# -- device placement on a fake GPU ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["ce", "tcl", "mlnt", "dividemix", "promix"])
def test_every_method_runs_its_forwards_passes_and_evaluation_on_a_fake_gpu(name):
    warm = {"tcl": ["tcl.warmup_epochs=1"], "dividemix": ["dividemix.warmup_epochs=1"],
            "promix": ["promix.warmup_epochs=1"]}.get(name, [])
    cfg = load_config(f"digits_{name}", [*TINY, *warm, "train.eval_batch_size=64"])
    tracer = RunTracer(cfg, device="cuda", backward=False)
    run = tracer.run()
    kinds = {k.label for k in METHODS[name].plan_epochs(cfg)}
    assert {s.kind for s in run.steps} == kinds and any("evaluation" in p.label for p in run.passes)
    if name in ("tcl", "dividemix", "promix"):  # their per-epoch passes (detection, co-divide, selection)
        assert any(p.kind in kinds for p in run.passes)


class MisplacedZeros(Method):
    """CE plus a regulariser built on a tensor made without ``device=`` (the CPU): the planted bug."""

    name = "misplaced_zeros"

    def loss(self, batch, info):
        logits = self.ctx.model(batch["image"]).logits.float()
        offset = torch.zeros(logits.shape[0])  # BUG: on the CPU whatever the device
        return torch.nn.functional.cross_entropy(logits + offset[:, None], batch["label"]), {}


@pytest.fixture
def misplaced():
    register(MisplacedZeros)
    yield MisplacedZeros
    METHODS.pop(MisplacedZeros.name, None)


def test_the_fake_gpu_check_catches_a_tensor_made_on_the_cpu(misplaced):
    cfg = load_config(None, [*TINY, f"method={misplaced.name}"])
    RunTracer(cfg).run()  # on the CPU the bug is invisible
    with pytest.raises(RuntimeError, match="cuda:0 and cpu"):
        RunTracer(cfg, device="cuda", backward=False).run()
