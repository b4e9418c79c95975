"""Behaviour of tcl_lite.models: shapes, checkpointing exactness, norms, heads, weights."""

from __future__ import annotations

import copy
import os
import pickle
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from tcl_lite.config import ModelConfig
from tcl_lite.errors import ModelError
from tcl_lite.models.heads import MLPClassifier, Projector
from tcl_lite.models.network import Encoder, ModelSpec, Network, NetworkOutput, build_encoder, build_model
from tcl_lite.models.torchvision_resnet import adapt_input_conv, hub_checkpoint_dir

ARCHS = ("tiny_cnn", "preact_resnet18", "preact_resnet18_he", "resnet18", "resnet34", "resnet50")


def make(arch: str = "tiny_cnn", num_classes: int = 10, seed: int = 0, **kwargs) -> Network:
    options = {k: kwargs.pop(k) for k in list(kwargs) if k in ModelConfig.__dataclass_fields__}
    torch.manual_seed(seed)
    return build_model(ModelConfig(arch=arch, **options), num_classes, **kwargs)


def images(batch: int, size: int, channels: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------
# Shapes and sizes


@pytest.mark.parametrize("arch,size,batch,width", [
    ("tiny_cnn", 16, 4, 128), ("preact_resnet18", 32, 2, 512),
    ("resnet18", 32, 2, 512), ("resnet18", 64, 2, 512),
])
def test_output_shapes_and_normalised_projection(arch: str, size: int, batch: int, width: int) -> None:
    model = make(arch, num_classes=7, with_projector=True, proj_dim=24, image_size=size)
    out = model(images(batch, size))
    assert isinstance(out, NetworkOutput)
    assert out.logits.shape == (batch, 7)
    assert out.features.shape == (batch, width) == (batch, model.encoder.out_dim)
    assert out.proj is not None and out.proj.shape == (batch, 24)
    torch.testing.assert_close(out.proj.norm(dim=1), torch.ones(batch))

    plain = make(arch, num_classes=7, image_size=size)
    assert plain.projector is None
    assert plain(images(batch, size)).proj is None


def test_extra_heads_are_declared_by_the_spec_and_leave_other_keys_alone() -> None:
    """ProMix's second Linear(512, K) head on the same features: ``ModelSpec.heads`` adds it under ``heads.``;
    a network without extra heads has exactly the state-dict keys it had before heads existed."""
    plain = make("resnet18_cifar", num_classes=5, with_projector=True)
    with_head = make("resnet18_cifar", num_classes=5, spec=ModelSpec(projector=True, heads={"pseudo": "linear"}))
    extra = set(with_head.state_dict()) - set(plain.state_dict())
    assert extra == {"heads.pseudo.weight", "heads.pseudo.bias"}
    assert not any(k.startswith("heads") for k in plain.state_dict())
    assert isinstance(with_head.heads.pseudo, nn.Linear) and with_head.heads.pseudo.weight.shape == (5, 512)
    out, bare = with_head(images(3, 32)), plain(images(3, 32))
    assert bare.heads == {} and set(out.heads) == {"pseudo"}
    torch.testing.assert_close(out.heads["pseudo"], with_head.heads.pseudo(out.features))
    with pytest.raises(ModelError, match="extra head 'pseudo'.*mlp, linear"):
        make(spec=ModelSpec(heads={"pseudo": "conv"}))


def test_resnet18_cifar_is_registered_as_promix_encoder() -> None:
    from tcl_lite.models.resnet_cifar import ResNetCifar

    model = make("resnet18_cifar", num_classes=10)
    assert isinstance(model.encoder, ResNetCifar) and model.encoder.out_dim == 512
    assert model(images(2, 32)).logits.shape == (2, 10)


@pytest.mark.parametrize("arch,size", [("tiny_cnn", 8), ("preact_resnet18", 8), ("resnet18", 32)])
@pytest.mark.parametrize("channels", [1, 4])
def test_in_channels(arch: str, size: int, channels: int) -> None:
    model = make(arch, num_classes=3, in_channels=channels, image_size=size, with_projector=True)
    out = model(images(2, size, channels))
    assert out.logits.shape == (2, 3) and out.proj is not None
    out.logits.sum().backward()


def test_out_dims() -> None:
    expected = {"tiny_cnn": 4 * 32, "preact_resnet18": 512, "preact_resnet18_he": 512,
                "resnet18": 512, "resnet34": 512, "resnet50": 2048}
    for arch in ARCHS:
        assert build_encoder(ModelConfig(arch=arch)).out_dim == expected[arch], arch
    assert build_encoder(ModelConfig(arch="tiny_cnn", width=8)).out_dim == 32


def test_preact_resnet18_is_the_tcl_reference_encoder() -> None:
    """tcl.md, section Network: stem conv -> BN -> ReLU, [2, 2, 2, 2] blocks, final ReLU(BN), pooling."""
    model = make("preact_resnet18", num_classes=10, with_projector=True, proj_dim=256)
    assert sum(p.numel() for p in model.parameters()) == 11_831_518  # the reference's TCL model, K=10
    encoder = model.encoder
    stem = list(encoder.stem.children())
    assert [type(m) for m in stem] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert stem[0].stride == (1, 1) and stem[0].kernel_size == (3, 3) and stem[0].bias is None
    assert not any(isinstance(m, nn.MaxPool2d) for m in encoder.modules())
    assert [len(stage) for stage in encoder.stages] == [2, 2, 2, 2]
    assert isinstance(encoder.pool[0], nn.BatchNorm2d) and isinstance(encoder.pool[1], nn.ReLU)
    # 1x1 projection shortcuts (no bias, no BN) exactly where the shape changes
    shortcuts = [type(block.shortcut) for stage in encoder.stages for block in stage]
    assert shortcuts == [type(None)] * 2 + [nn.Conv2d, type(None)] * 3


def _block_reference(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The reference block written out from its own layers: a = relu(bn1(x)), shortcut = a or conv(a)."""
    a = F.relu(block.bn1(x))
    shortcut = a if block.shortcut is None else block.shortcut(a)
    return block.conv2(F.relu(block.bn2(block.conv1(a)))) + shortcut


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_reference_block_adds_the_preactivated_tensor(norm: str) -> None:
    encoder = make("preact_resnet18", norm=norm).encoder.eval()
    for m in encoder.modules():  # non-trivial statistics and affine parameters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5), m.bias.data.uniform_(-0.5, 0.5)
    identity_block, projection_block = encoder.stages[0][1], encoder.stages[1][0]
    x = images(2, 8)
    with torch.no_grad():
        x64 = encoder.stem(x)
        for block in (identity_block, projection_block):
            expected = _block_reference(block, x64.clone())
            torch.testing.assert_close(block(x64.clone()), expected, rtol=0, atol=0)
            # and not He et al.'s form, whose identity branch is x itself (without a norm layer the two
            # coincide here: the stem's output is already non-negative, so relu(x) = x)
            if block.shortcut is None and norm != "none":
                he = block.conv2(F.relu(block.bn2(block.conv1(F.relu(block.bn1(x64)))))) + x64
                assert (block(x64.clone()) - he).abs().max() > 1e-3
            x64 = block(x64)


def test_preact_resnet18_he_keeps_the_earlier_layout() -> None:
    he = make("preact_resnet18_he", num_classes=10, with_projector=True).encoder
    assert isinstance(he.stem, nn.Conv2d)  # no stem norm
    assert not any(b.preactivated_identity for stage in he.stages for b in stage)
    # the state-dict keys of tcl_lite's preact_resnet18 before layout 2, so old weights load into it
    keys = set(he.state_dict())
    assert {"stem.weight", "pool.0.weight", "stages.1.0.shortcut.weight"} <= keys
    assert not any(k.startswith("stem.norm") for k in keys)
    assert sum(p.numel() for p in make("preact_resnet18_he", with_projector=True).parameters()) == 11_831_390
    block = he.stages[0][1].eval()
    with torch.no_grad():
        h = he.stem(images(2, 8))
        expected = block.conv2(F.relu(block.bn2(block.conv1(F.relu(block.bn1(h)))))) + h
        torch.testing.assert_close(block(h.clone()), expected, rtol=0, atol=0)


def test_final_norm_false_pools_the_last_stage_directly() -> None:
    from tcl_lite.models.preact_resnet import PreActResNet

    encoder = PreActResNet(final_norm=False).eval()
    assert [type(m) for m in encoder.pool] == [nn.AdaptiveAvgPool2d, nn.Flatten]
    x = images(2, 16)
    with torch.no_grad():
        h = encoder.stem(x)
        for stage in encoder.stages:
            h = stage(h)
        torch.testing.assert_close(encoder(x), F.avg_pool2d(h, h.shape[-1]).flatten(1))


def test_torchvision_split() -> None:
    encoder = build_encoder(ModelConfig(arch="resnet18"))
    assert list(dict(encoder.stem.named_children())) == ["conv1", "bn1", "relu", "maxpool"]
    assert len(encoder.stages) == 4
    assert not any(isinstance(m, nn.Linear) for m in encoder.modules())  # ImageNet fc dropped


# ---------------------------------------------------------------------------------------------
# Activation checkpointing


def count_stage_calls(encoder: Encoder) -> list[int]:
    # Pre-hooks: checkpoint's early stop aborts a recomputation before any forward hook would run.
    calls = [0] * len(encoder.stages)
    for i, stage in enumerate(encoder.stages):
        stage.register_forward_pre_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    return calls


def train_step(model: Network, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(123)  # same dropout masks in both runs
    out = model(x)
    loss = F.cross_entropy(out.logits, y) + out.features.square().mean()
    loss.backward()
    return loss.detach()


@pytest.mark.parametrize("arch,size,norm", [("tiny_cnn", 16, "batch"), ("preact_resnet18", 16, "batch"),
                                            ("preact_resnet18", 8, "none"), ("preact_resnet18_he", 8, "none")])
def test_activation_checkpointing_is_exact(arch: str, size: int, norm: str) -> None:
    plain = make(arch, norm=norm, with_projector=True)
    ckpt = copy.deepcopy(plain)
    ckpt.encoder.activation_checkpointing = True
    plain.train()
    ckpt.train()
    calls = count_stage_calls(ckpt.encoder)
    x, y = images(8, size), torch.arange(8) % 10

    loss_plain, loss_ckpt = train_step(plain, x, y), train_step(ckpt, x, y)
    assert calls == [2] * len(calls)  # really recomputed in backward
    torch.testing.assert_close(loss_ckpt, loss_plain, rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-6, msg=name)
    # BatchNorm statistics moved once, as without checkpointing (not twice).
    buffers = dict(ckpt.named_buffers())
    for name, b in plain.named_buffers():
        torch.testing.assert_close(buffers[name], b, rtol=0, atol=0, msg=name)
    assert all(int(b) == 1 for n, b in buffers.items() if n.endswith("num_batches_tracked"))


def test_checkpointing_survives_repeated_recomputation() -> None:
    # backward twice on one graph recomputes each stage twice; stats must still move only once.
    plain = make("tiny_cnn", dropout=0.0)
    ckpt = copy.deepcopy(plain)
    ckpt.encoder.activation_checkpointing = True
    x = images(8, 16)
    for model in (plain, ckpt):
        loss = model(x).logits.square().mean()
        loss.backward(retain_graph=True)
        loss.backward()
    for p, q in zip(plain.parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-6)
    for b, c in zip(plain.buffers(), ckpt.buffers(), strict=True):
        assert torch.equal(b, c)


@pytest.mark.parametrize("arch,size,weight_names", [
    ("tiny_cnn", 16, ["encoder.stem.conv.weight", "encoder.stages.1.0.conv.weight"]),
    ("preact_resnet18", 8, ["encoder.stem.conv.weight", "encoder.stages.1.0.conv1.weight"]),
])
def test_checkpointing_under_functional_call_second_order(arch: str, size: int, weight_names: list) -> None:
    # Fast weights (MLNT): backward runs after functional_call has restored the module's own tensors,
    # so the recomputation must use the tensors bound at forward time.
    plain = make(arch, dropout=0.0)
    ckpt = copy.deepcopy(plain)
    ckpt.encoder.activation_checkpointing = True
    x = images(8 if arch == "tiny_cnn" else 4, size)
    results = []
    for model in (plain, ckpt):
        fast = {k: 1.5 * v for k, v in model.named_parameters()}
        stats = {k: v.clone() for k, v in model.named_buffers()}
        out = torch.func.functional_call(model, {**fast, **stats}, (x,))
        weights = [fast[name] for name in weight_names]
        grads = torch.autograd.grad(out.logits.square().sum(), weights, create_graph=True)
        sum(g.square().sum() for g in grads).backward()
        results.append((grads, [p.grad for p in model.parameters()], stats, list(model.buffers())))
    (g_plain, second_plain, stats_plain, own_plain), (g_ckpt, second_ckpt, stats_ckpt, own_ckpt) = results
    for a, b in [*zip(g_plain, g_ckpt, strict=True), *zip(second_plain, second_ckpt, strict=True)]:
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
    assert all(torch.equal(stats_plain[k], stats_ckpt[k]) for k in stats_plain)
    assert all(torch.equal(a, b) for a, b in zip(own_plain, own_ckpt, strict=True))  # untouched


def test_plain_checkpoint_would_update_batchnorm_twice() -> None:
    # Why the encoder guards its recomputation: torch's non-reentrant checkpoint replays BN in train mode.
    torch.manual_seed(0)
    stage = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
    checkpoint(stage, images(4, 8).requires_grad_(), use_reentrant=False).sum().backward()
    assert int(stage[1].num_batches_tracked) == 2


def test_checkpointing_replays_randomness() -> None:
    def encoder() -> Encoder:
        torch.manual_seed(0)
        stage = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.Dropout(0.5), nn.BatchNorm2d(4), nn.ReLU())
        return Encoder(nn.Conv2d(3, 4, 3, padding=1), [stage, copy.deepcopy(stage)],
                       nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1)), out_dim=4)

    plain, ckpt = encoder(), encoder()
    ckpt.activation_checkpointing = True
    x = images(4, 8)
    for model in (plain, ckpt):
        torch.manual_seed(5)
        model(x).square().sum().backward()
    for p, q in zip(plain.parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad)


def test_checkpointing_only_when_training_with_grad() -> None:
    model = make("tiny_cnn", activation_checkpointing=True)
    assert model.encoder.activation_checkpointing
    calls = count_stage_calls(model.encoder)
    x = images(4, 16)
    with torch.no_grad():
        model(x)
    model.eval()
    model(x).logits.sum().backward()
    assert calls == [2] * 3  # one forward each, no recomputation
    model.train()
    model(x).logits.sum().backward()
    assert calls == [4] * 3


# ---------------------------------------------------------------------------------------------
# Normalisation and heads


@pytest.mark.parametrize("arch,size", [("tiny_cnn", 16), ("preact_resnet18", 16), ("resnet18", 32)])
def test_group_norm_is_batch_independent(arch: str, size: int) -> None:
    model = make(arch, norm="group", dropout=0.0, spec=ModelSpec(projector=True, heads={"extra": "mlp"})).train()
    assert not any(isinstance(m, _BatchNorm) for m in model.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in model.encoder.modules())
    assert any(isinstance(m, nn.LayerNorm) for m in model.classifier.modules())
    x = images(6, size)
    whole, first, second = model(x), model(x[:3]), model(x[3:])
    for field, full in whole._asdict().items():
        if field == "heads":  # the extra heads' logits, by name
            for name, logits in full.items():
                halves = torch.cat([first.heads[name], second.heads[name]])
                torch.testing.assert_close(halves, logits, rtol=1e-5, atol=1e-5, msg=name)
            continue
        halves = torch.cat([getattr(first, field), getattr(second, field)])
        torch.testing.assert_close(halves, full, rtol=1e-5, atol=1e-5, msg=field)


def test_group_counts() -> None:
    encoder = build_encoder(ModelConfig(arch="preact_resnet18", norm="group"))
    groups = {m.num_channels: m.num_groups for m in encoder.modules() if isinstance(m, nn.GroupNorm)}
    assert groups == {64: 16, 128: 32, 256: 32, 512: 32}
    odd = build_encoder(ModelConfig(arch="tiny_cnn", width=3, norm="group"))
    assert all(m.num_channels % m.num_groups == 0 for m in odd.modules() if isinstance(m, nn.GroupNorm))


def test_norm_none_has_no_norm_layer() -> None:
    model = make("preact_resnet18", norm="none", with_projector=True)
    norms = (_BatchNorm, nn.GroupNorm, nn.LayerNorm)
    assert not any(isinstance(m, norms) for m in model.modules())
    out = model(images(2, 16))
    assert torch.isfinite(out.logits).all()


def test_reference_heads_with_batch_norm() -> None:
    model = make("tiny_cnn", num_classes=5, with_projector=True, dropout=0.25)
    assert isinstance(model.classifier, MLPClassifier) and isinstance(model.projector, Projector)
    kinds = [type(m) for m in model.classifier]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout, nn.Linear, nn.BatchNorm1d]
    assert model.classifier.dropout.p == 0.25
    kinds = [type(m) for m in model.projector]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d]
    assert model.projector.fc2.out_features == 256


def test_mlp_head_dropout_acts_in_training_only() -> None:
    model = make("tiny_cnn", norm="group", dropout=0.5)
    x = images(8, 16)
    model.train()
    assert not torch.allclose(model(x).logits, model(x).logits)
    model.eval()
    torch.testing.assert_close(model(x).logits, model(x).logits)


def test_linear_head() -> None:
    model = make("tiny_cnn", num_classes=4, head="linear")
    assert isinstance(model.classifier, nn.Linear)
    assert (model.classifier.in_features, model.classifier.out_features) == (128, 4)
    assert model(images(2, 16)).logits.shape == (2, 4)


@pytest.mark.parametrize("arch", ["tiny_cnn", "resnet18"])
def test_construction_is_deterministic_under_seed(arch: str) -> None:
    a, b, c = (make(arch, seed=s, with_projector=True).state_dict() for s in (0, 0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_network_copies_and_pickles() -> None:
    model = make("tiny_cnn", norm="group", with_projector=True)
    teacher = copy.deepcopy(model)  # e.g. an EMA teacher
    clone = pickle.loads(pickle.dumps(model))
    x = images(2, 16)
    model.eval(), teacher.eval(), clone.eval()
    torch.testing.assert_close(teacher(x).logits, model(x).logits)
    torch.testing.assert_close(clone(x).logits, model(x).logits)


# ---------------------------------------------------------------------------------------------
# Pretrained weights and errors


def test_pretrained_offline_raises_model_error() -> None:
    from torchvision.models import ResNet18_Weights

    filename = os.path.basename(ResNet18_Weights.DEFAULT.url)
    if os.path.exists(os.path.join(hub_checkpoint_dir(), filename)):
        pytest.skip(f"{filename} is cached in {hub_checkpoint_dir()}, so the offline path cannot be tested")
    with pytest.raises(ModelError) as info:
        build_model(ModelConfig(arch="resnet18", pretrained=True), 10)
    message = str(info.value)
    assert "resnet18" in message and "model.pretrained" in message and hub_checkpoint_dir() in message


def test_pretrained_needs_torchvision_arch_and_batch_norm() -> None:
    with pytest.raises(ModelError, match="model.pretrained"):
        build_model(ModelConfig(arch="tiny_cnn", pretrained=True), 10)
    with pytest.raises(ModelError, match="model.norm=batch"):
        build_model(ModelConfig(arch="resnet18", norm="group", pretrained=True), 10)


def test_bad_arguments_raise_model_error() -> None:
    assert issubclass(ModelError, ValueError)
    for kwargs in ({"num_classes": 0}, {"num_classes": 10, "in_channels": 0}):
        with pytest.raises(ModelError):
            build_model(ModelConfig(), **kwargs)
    with pytest.raises(ModelError, match="model.arch"):
        build_model(ModelConfig(arch="vit"), 10)
    with pytest.raises(ModelError, match="model.norm"):
        build_model(ModelConfig(norm="layer"), 10)
    with pytest.raises(ModelError, match="model.head"):
        build_model(ModelConfig(head="conv"), 10)


def test_adapted_input_conv() -> None:
    weight = torch.randn(8, 3, 7, 7)
    grey = torch.rand(1, 1, 12, 12)
    reference = F.conv2d(grey.expand(1, 3, 12, 12), weight)
    for channels in (1, 2, 5, 6):
        adapted = adapt_input_conv(weight, channels)
        assert adapted.shape == (8, channels, 7, 7)
        if channels % 3 == 0 or channels == 1:  # exact for a grey image; otherwise only the scale is kept
            torch.testing.assert_close(F.conv2d(grey.expand(1, channels, 12, 12), adapted), reference)


# ---------------------------------------------------------------------------------------------
# Speed


@pytest.fixture
def two_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)
