"""The extension path of datasets, architectures and views: each is defined here, in a test module, registered
with ``register_dataset`` / ``register_arch`` / ``register_view``, and a tiny run trains with all three (and a
test-defined method that names the view) through the engine, with no file of the package changed. The same
registrations reach the config loader's checks and error messages, ``config-docs`` and ``describe``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY
from torch import nn
from torchvision.transforms import v2

from tcl_lite.config import DataConfig, config_docs, load_config
from tcl_lite.data import build_data
from tcl_lite.data.batched_views import uniforms
from tcl_lite.data.catalog import register_dataset, register_view
from tcl_lite.data.datasets import TensorImages
from tcl_lite.data.entries import Dataset, RawData, SplitCounts, ViewContext
from tcl_lite.errors import ConfigError, DataError
from tcl_lite.methods import METHODS, register
from tcl_lite.methods.ce.method import CrossEntropy
from tcl_lite.models.archs import register_arch
from tcl_lite.models.encoder import Encoder
from tcl_lite.registry import ARCHS, DATASETS, VIEWS

TRAIN, TEST, CLASSES = 640, 160, 4


class Halves(Dataset):
    """Class k < 3 lights the top half of channel k of an 8x8 noise image, class 3 the top halves of all three:
    a horizontal flip keeps the class."""

    name = "toy_halves"
    help = "four classes of lit image halves (a test's dataset)"

    def counts(self, cfg: DataConfig) -> SplitCounts:
        return SplitCounts(TRAIN, 0, TEST, CLASSES)

    def read(self, cfg: DataConfig, seed: int) -> RawData:
        g = torch.Generator().manual_seed(seed)
        labels = torch.arange(TRAIN + TEST) % CLASSES
        x = torch.randint(0, 60, (TRAIN + TEST, 3, 8, 8), generator=g, dtype=torch.uint8)
        for k in range(CLASSES):
            x[labels == k, k if k < 3 else slice(None), :4] += 150
        y = labels.numpy().astype(np.int64)
        return RawData(TensorImages(x[:TRAIN]), y[:TRAIN], TensorImages(x[TRAIN:]), y[TRAIN:],
                       [f"half{k}" for k in range(CLASSES)], ((0.3,) * 3, (0.3,) * 3), True)


class TwoConvs(Encoder):
    def __init__(self, in_channels: int) -> None:
        stem = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU())
        stage = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        super().__init__(stem, [stage], nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1)), out_dim=16)


def two_convs(cfg, in_channels: int, image_size: int) -> nn.Module:
    return TwoConvs(in_channels)


def flip_per_sample(ctx: ViewContext):
    return v2.Compose([v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(list(ctx.mean), list(ctx.std))])


def flip_batched(ctx: ViewContext):
    def op(x: torch.Tensor, keys: np.ndarray, slot: int) -> torch.Tensor:
        flip = torch.as_tensor(uniforms(keys, slot, 1)[:, 0] < 0.5, device=x.device).view(-1, 1, 1, 1)
        return torch.where(flip, x.flip(-1), x)

    return op


class FlipCE(CrossEntropy):
    name = "toy_flip_ce"
    presets = ()
    views = ("toy_flip",)


@pytest.fixture
def registered():
    register_dataset(Halves)
    register_arch("toy_two_convs", help="two convolutions (a test's encoder)")(two_convs)
    register_view("toy_flip", flip_per_sample, flip_batched, help="a horizontal flip (a test's view)")
    register(FlipCE)
    yield
    for registry, name in ((DATASETS, "toy_halves"), (ARCHS, "toy_two_convs"), (VIEWS, "toy_flip"),
                           (METHODS, "toy_flip_ce")):
        registry.pop(name, None)  # other tests compare messages with a CLI that never saw them


@pytest.mark.parametrize("augment_on", ["workers", "device"])
def test_a_test_defined_dataset_architecture_and_view_train(registered, tmp_path, fresh_accelerate, augment_on):
    from tcl_lite.engine import train

    cfg = load_config(None, [*TINY, "data.dataset=toy_halves", "model.arch=toy_two_convs", "method=toy_flip_ce",
                             "data.noise_rate=0.2", f"data.augment_on={augment_on}", "optim.lr=0.2",
                             "optim.scale_lr=false", "train.epochs=3", f"output_dir={tmp_path / 'run'}"])
    metrics = train(cfg)
    assert metrics["test_acc"] > 0.9  # 4 classes: chance is 0.25
    assert (tmp_path / "run" / "checkpoints").is_dir()


def test_registered_entries_are_checked_listed_and_described(registered):
    for key, name in (("data.dataset", "toy_halves"), ("model.arch", "toy_two_convs"), ("method", "toy_flip_ce")):
        assert f"| `{key}` |" in config_docs() and name in config_docs()
        with pytest.raises(ConfigError, match=rf"'{key}': 'nope' is not available; choose one of .*{name}"):
            load_config(None, [f"{key}=nope"])
    data_cfg = DataConfig(dataset="toy_halves", image_size=8, train_subset=100, val_fraction=0.25)
    info = DATASETS["toy_halves"].describe(data_cfg)
    bundle = build_data(data_cfg, seed=0)
    assert (info.train, info.val, info.test, info.num_classes) == (len(bundle.train), len(bundle.val),
                                                                   len(bundle.test), bundle.num_classes)
    assert "| `toy_flip` | a horizontal flip (a test's view) |" in VIEWS.table()
    with pytest.raises(DataError, match="view: 'blurry' is not available; choose one of weak, .*toy_flip"):
        bundle.train_views(("toy_flip", "blurry"))


def test_the_package_forgets_them_afterwards():
    for registry, name in ((DATASETS, "toy_halves"), (ARCHS, "toy_two_convs"), (VIEWS, "toy_flip")):
        assert name not in registry
    with pytest.raises(ConfigError, match="'data.dataset': 'toy_halves' is not available"):
        load_config(None, ["data.dataset=toy_halves"])
