"""timm backbones (``model.arch=timm:<name>``): names, offline weights, a local weights file, and TCL
with bf16 + the exact gradient cache + activation checkpointing. Random weights only: nothing is
downloaded (the offline test forces the Hugging Face hub offline)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import ROOT, run_env, train_step
from safetensors.torch import save_file

from tcl_lite.config import ModelConfig, load_config
from tcl_lite.data.build import model_data_settings
from tcl_lite.errors import ConfigError, ModelError
from tcl_lite.methods import StepInfo, TrainContext
from tcl_lite.methods.tcl.method import TCL
from tcl_lite.models.network import build_model

VIT = "timm:test_vit"  # 6 blocks of width 64, LayerNorm only: ~0.3M parameters
LATE = StepInfo(epoch=100, step_in_epoch=0, global_step=0, steps_per_epoch=1)


def test_unknown_name_lists_close_matches():
    with pytest.raises(ConfigError, match="close matches: timm:resnet10t"):
        load_config(None, ["model.arch=timm:resnet10"])
    with pytest.raises(ModelError, match="not a timm model name"):
        build_model(ModelConfig(arch="timm:no_such_net"), 10)
    with pytest.raises(ConfigError, match="timm:<name>"):
        load_config(None, ["model.arch=vgg"])


def test_offline_pretrained_weights_error_says_how_to_give_a_local_file(tmp_path):
    code = ("from tcl_lite.config import ModelConfig\nfrom tcl_lite.models.network import build_model\n"
            "build_model(ModelConfig(arch='timm:test_vit', pretrained=True), 10, image_size=32)\n")
    env = dict(run_env(), HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), TORCH_HOME=str(tmp_path / "torch"))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("tcl_lite.errors.ModelError"), proc.stderr[-2000:]
    assert "model.pretrained_path=" in last and "huggingface.co/timm/test_vit" in last


@pytest.mark.parametrize("name", ["test_vit", "resnet10t"])
def test_local_weights_file_is_loaded_exactly(tmp_path, name):
    """A timm model saved with its 1000-way classifier; model.pretrained_path loads every encoder
    tensor (parameters and BatchNorm buffers) and drops the classifier."""
    torch.manual_seed(1)
    source = timm.create_model(name, img_size=32) if name == "test_vit" else timm.create_model(name)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    torch.manual_seed(2)  # a different random init, so equality means loaded
    net = build_model(ModelConfig(arch=f"timm:{name}", pretrained_path=str(path)), 7, image_size=32)
    loaded = net.encoder.model.state_dict()
    saved = source.state_dict()
    assert loaded and set(loaded) <= set(saved)
    assert set(saved) - set(loaded) <= {"head.weight", "head.bias", "fc.weight", "fc.bias"}
    for k, v in loaded.items():
        assert torch.equal(v, saved[k]), k
    # Data transforms follow the weights' config: test_vit's is 160 px, mean = std = 0.5.
    cfg = load_config(None, [f"model.arch=timm:{name}", f"model.pretrained_path={path}"])
    data_cfg, stats = model_data_settings(cfg.data, cfg.model)
    expected = timm.get_pretrained_cfg(name).to_dict()
    assert data_cfg.image_size == expected["input_size"][-1]
    assert stats == (tuple(expected["mean"]), tuple(expected["std"]))
    cfg = load_config(None, [f"model.arch=timm:{name}", f"model.pretrained_path={path}",
                             "model.pretrained_transforms=false"])
    assert model_data_settings(cfg.data, cfg.model) == (cfg.data, None)


def test_bad_weights_files_are_named(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        build_model(ModelConfig(arch=VIT, pretrained_path=str(tmp_path / "nope.safetensors")), 3, image_size=32)
    other = tmp_path / "other.safetensors"
    save_file(timm.create_model("resnet10t").state_dict(), str(other))
    with pytest.raises(ModelError, match="does not hold weights of test_vit"):
        build_model(ModelConfig(arch=VIT, pretrained_path=str(other)), 3, image_size=32)
    with pytest.raises(ModelError, match="for timm models"):
        build_model(ModelConfig(arch="tiny_cnn", pretrained_path=str(other)), 3)


def _tcl_method(tmp_path, *overrides: str) -> tuple[TCL, dict]:
    from accelerate import Accelerator

    from tcl_lite.data import build_data

    cfg = load_config(None, ["method=tcl", f"model.arch={VIT}", "data.image_size=32", "model.norm=group",
                             "model.dropout=0", "model.proj_dim=16", "data.train_subset=64", *overrides])
    acc = Accelerator(cpu=True, mixed_precision=cfg.train.mixed_precision)
    data = build_data(cfg.data, cfg.seed, cfg.model)
    torch.manual_seed(0)
    model = build_model(cfg.model, data.num_classes, image_size=32, with_projector=True,
                        activation_checkpointing=cfg.train.activation_checkpointing)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model, opt = acc.prepare(model, opt)
    method = TCL(TrainContext(cfg, acc, model, opt, data, tmp_path))
    ds = data.train_views(TCL.views)
    batch = torch.utils.data.default_collate([ds[i] for i in range(16)])
    g = torch.Generator().manual_seed(1)
    method.clean_probability = torch.rand(len(data.noisy_labels), generator=g)
    method.prototypes = F.normalize(torch.randn(data.num_classes, 16, generator=g), dim=1)
    return method, batch


def _step(method: TCL, batch: dict, micro: int = 1) -> tuple[dict, list[torch.Tensor]]:
    method.ctx.optimizer.zero_grad(set_to_none=True)
    torch.manual_seed(123)  # the same mixup lambda and permutation for every variant
    logs = train_step(method, batch, LATE, micro)
    return logs, [p.grad.float().clone() for p in method.ctx.model.parameters() if p.grad is not None]


@pytest.mark.parametrize("precision,tol", [("no", 1e-5), ("bf16", 1e-3)])
def test_exact_gradient_cache_equals_the_single_batch_loss(fresh_accelerate, tmp_path, monkeypatch, precision, tol):
    """No BatchNorm anywhere (ViT LayerNorm, heads LayerNorm) and no dropout: the full-batch TCL loss of
    two micro-batches through the gradient cache, with timm's activation checkpointing, equals the
    single-batch loss (fp32: 1e-5 absolute; bf16 autocast: 1e-3, allowing for bf16 matrix products of
    other shapes; both measured equal to the last bit on CPU)."""
    calls = []
    real = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    method, batch = _tcl_method(tmp_path, f"train.mixed_precision={precision}", "train.activation_checkpointing=true")
    logs1, g1 = _step(method, batch)
    assert calls, "timm's gradient checkpointing was not used"
    logs2, g2 = _step(method, batch, 2)
    assert abs(float(logs1["loss"]) - float(logs2["loss"])) <= tol, (float(logs1["loss"]), float(logs2["loss"]))
    cos = F.cosine_similarity(torch.cat([g.flatten() for g in g1]), torch.cat([g.flatten() for g in g2]), dim=0)
    assert cos > (0.9999 if precision == "no" else 0.99), float(cos)


def test_tcl_trains_two_epochs_with_bf16_accumulation_and_checkpointing(fresh_accelerate, tmp_path):
    from tcl_lite.engine import train

    out = tmp_path / "run"
    cfg = load_config(None, ["method=tcl", f"model.arch={VIT}", "data.image_size=16", "model.proj_dim=16",
                             "data.train_subset=128", "data.test_subset=50", "train.batch_size=32",
                             "train.gradient_accumulation_steps=2", "train.mixed_precision=bf16",
                             "train.activation_checkpointing=true", "optim.name=adamw8bit", "optim.lr=0.002",
                             "train.epochs=2", "tcl.warmup_epochs=1", "tcl.knn_k=20", "train.log_every=1000",
                             f"output_dir={out}"])
    train(cfg)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(math.isfinite(r["train_loss"]) and 0 <= r["test_acc"] <= 1 for r in records)
    assert (out / "checkpoints" / "step_00000008" / "model.safetensors").is_file()
    weights = timm.create_model("test_vit", num_classes=0, img_size=16).state_dict()
    from safetensors.torch import load_file

    saved = load_file(str(out / "checkpoints" / "step_00000008" / "model.safetensors"))
    assert {f"encoder.model.{k}" for k in weights} <= set(saved)


def test_tcl_with_a_timm_encoder_under_two_gloo_processes(tmp_path):
    """DDP: two real gloo ranks train TCL on test_vit (exact gradient cache, contrastive negatives from
    both processes) and end with identical weights."""
    from test_distributed import launch_two

    out = tmp_path / "ddp"
    launch_two(str(ROOT / "tests" / "dist_train.py"), "method=tcl", f"model.arch={VIT}", "data.image_size=16",
               "model.proj_dim=16", "data.train_subset=128", "data.test_subset=50", "train.batch_size=16",
               "train.gradient_accumulation_steps=2", "train.epochs=1", "tcl.knn_k=20", "train.log_every=1000",
               f"output_dir={out}")
    infos = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["num_processes"] for i in infos] == [2, 2]
    from safetensors.torch import load_file

    w0, w1, init = (load_file(str(out / name)) for name in ("rank0.safetensors", "rank1.safetensors",
                                                             "init0.safetensors"))
    assert any(k.startswith("encoder.model.blocks.") for k in w0)
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert not torch.equal(w0["encoder.model.patch_embed.proj.weight"], init["encoder.model.patch_embed.proj.weight"])
