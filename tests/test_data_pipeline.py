"""``build_data`` is a pipeline of named stages (read -> subset -> noise -> validation split -> views); these
fingerprints pin its output bit for bit (labels, subsets, splits, images, per-sample and batched views,
normalisation) at a few configs of every dataset that needs no download, so a change of the stages that
changes any sample is caught. The digests were taken from the single-function ``build_data`` before it was
split into stages."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tcl_lite.config import DataConfig
from tcl_lite.data import build_data, mix_seed
from tcl_lite.data.randaugment import BatchedRandAugment, make_randaugment_transform
from tcl_lite.errors import DataError
from tcl_lite.registry import DATASETS

CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _update(h: hashlib._Hash, value: object) -> None:
    if value is None:
        h.update(b"none")
    elif isinstance(value, torch.Tensor):
        h.update(str((value.dtype, tuple(value.shape))).encode())
        h.update(value.detach().contiguous().numpy().tobytes())
    elif isinstance(value, np.ndarray):
        h.update(str((value.dtype, value.shape)).encode())
        h.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, (list, tuple)):
        h.update(f"seq{len(value)}".encode())
        for v in value:
            _update(h, v)
    else:
        h.update(repr(value).encode())


def _images(split) -> torch.Tensor | None:
    return None if split is None else torch.stack([split.images[i] for i in range(len(split))])


def fingerprint(cfg: DataConfig, seed: int) -> str:
    """sha256 of everything a run reads from the bundle of ``cfg``."""
    b = build_data(cfg, seed)
    h = hashlib.sha256()
    for part in (b.noisy_labels, b.true_labels, b.num_classes, b.channels, b.image_size, b.class_names,
                 b.mean, b.std, _images(b.train), None if b.test is None else b.test.labels, _images(b.test),
                 None if b.val is None else b.val.labels, _images(b.val)):
        _update(h, part)
    views = ("weak", "strong", "test")
    per_sample = b.train_views(views, "cpu")  # augment_on=auto on the CPU: per sample, in the workers
    per_sample.set_epoch(2)
    for i in (0, 3, len(per_sample) - 1):
        _update(h, per_sample[i]["image"])
    b.augment_on = "device"
    device_views = b.train_views(views, "cpu")
    device_views.set_epoch(1)
    items = [device_views[i] for i in range(min(6, len(device_views)))]
    batch = {"index": torch.tensor([it["index"] for it in items]), "image": torch.stack([it["image"] for it in items]),
             "label": torch.tensor([it["label"] for it in items])}
    _update(h, device_views.finish_batch(batch)["image"])
    _update(h, b.train_eval()[1]["image"])
    return h.hexdigest()[:16]


def _png(path: Path, size: tuple[int, int], value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 255 - value, (7 * value) % 256)).save(path)


def _cifar_like_folder(root: Path) -> Path:
    """train/ (4 images per class) and val/ (1) folders of the 10 CIFAR-10 classes, no test/."""
    for k, name in enumerate(CIFAR10):
        for split, count in (("train", 4), ("val", 1)):
            for i in range(count):
                _png(root / split / name / f"{i}.png", (10 + 3 * i, 9 + k % 3), 23 * k + 5 * i)
    return root


def _file_lists(root: Path) -> tuple[str, str]:
    lines = {"train": [], "test": []}
    for split, count in (("train", 40), ("test", 8)):
        for i in range(count):
            rel = f"{split}/{i:02d}.png"
            _png(root / rel, (12, 12), (37 * i + (split == "test")) % 256)
            lines[split].append(f"{rel} {i % 4}")
    for split, text in lines.items():
        (root / f"{split}.txt").write_text("\n".join(text) + "\n")
    return str(root / "train.txt"), str(root / "test.txt")


# config overrides -> digest of the bundle, taken before build_data was split into stages
DIGITS = {
    "default": ({}, 0, "b2f6c7173a6c8588"),
    "none_val_small": ({"noise_type": "none", "image_size": 8, "train_subset": 300, "test_subset": 100,
                        "val_fraction": 0.2}, 3, "4b1cb639a480d849"),
    "symmetric_high": ({"noise_rate": 0.8, "train_subset": 200, "digits_test_fraction": 0.5, "image_size": 12},
                       5, "3b220cde73ee52c3"),
}


@pytest.mark.parametrize("name", list(DIGITS))
def test_digits_bundles_are_bit_exact(name: str) -> None:
    overrides, seed, digest = DIGITS[name]
    assert fingerprint(DataConfig(**overrides), seed) == digest


def test_label_file_with_subset_and_validation_is_bit_exact(tmp_path: Path) -> None:
    clean = build_data(DataConfig(noise_type="none"), seed=1).true_labels
    np.save(tmp_path / "labels.npy", (clean * 7 + 3) % 10)
    cfg = DataConfig(noise_type="file", noise_file=str(tmp_path / "labels.npy"), train_subset=500, val_fraction=0.1,
                     image_size=8)
    assert fingerprint(cfg, 1) == "f541d60f342ae58b"


def test_image_folder_with_asymmetric_noise_and_val_folder_is_bit_exact(tmp_path: Path) -> None:
    root = _cifar_like_folder(tmp_path / "c10")
    cfg = DataConfig(dataset="imagefolder", root=str(root), image_size=8, noise_type="asymmetric", noise_rate=0.5,
                     cache_decoded="off")
    assert fingerprint(cfg, 2) == "f427c0f6337bfdea"


def test_file_lists_with_subsets_and_val_fraction_are_bit_exact(tmp_path: Path) -> None:
    train, test = _file_lists(tmp_path / "lists")
    cfg = DataConfig(dataset="filelist", root=str(tmp_path / "lists"), train_list=train, test_list=test,
                     image_size=8, noise_type="symmetric", noise_rate=0.3, train_subset=32, test_subset=4,
                     val_fraction=0.25, cache_decoded="on")
    assert fingerprint(cfg, 4) == "63a6991a3c88376f"


# ---------------------------------------------------------------------------------------------
# describe: a dataset's shape without reading it (what the planner needs)


def _same_shape(cfg: DataConfig, seed: int = 0) -> None:
    info = DATASETS[cfg.dataset].describe(cfg)
    b = build_data(cfg, seed)
    sizes = tuple(0 if split is None else len(split) for split in (b.train, b.val, b.test))
    assert (info.train, info.val, info.test) == sizes
    assert (info.num_classes, info.channels, info.image_size) == (b.num_classes, b.channels, b.image_size)
    if info.mean is not None:
        assert (info.mean, info.std) == (b.mean, b.std)


@pytest.mark.parametrize("overrides", [{}, {"train_subset": 300, "test_subset": 100, "val_fraction": 0.2},
                                       {"digits_test_fraction": 0.45, "val_fraction": 0.15, "image_size": 8}])
def test_digits_describe_matches_the_bundle(overrides: dict) -> None:
    _same_shape(DataConfig(**overrides))


def test_folders_and_lists_describe_matches_the_bundle(tmp_path: Path) -> None:
    root = _cifar_like_folder(tmp_path / "c10")
    _same_shape(DataConfig(dataset="imagefolder", root=str(root), image_size=8, noise_type="none", train_subset=30))
    train, test = _file_lists(tmp_path / "lists")
    _same_shape(DataConfig(dataset="filelist", root=str(tmp_path / "lists"), train_list=train, test_list=test,
                           image_size=8, train_subset=32, test_subset=4, val_fraction=0.25, noise_type="none"))


def test_cifar_describes_itself_without_its_files(tmp_path: Path) -> None:
    cfg = DataConfig(dataset="cifar100", root=str(tmp_path / "absent"), download=False, image_size=32,
                     train_subset=10000, val_fraction=0.1)
    info = DATASETS["cifar100"].describe(cfg)
    assert (info.train, info.val, info.test, info.num_classes, info.channels) == (9000, 1000, 10000, 100, 3)
    assert info.mean == (0.5071, 0.4865, 0.4409) and DATASETS["cifar100"].view_options == {"crop_then_flip": True}
    assert DATASETS["cifar10"].describe(DataConfig(dataset="cifar10", root=str(tmp_path))).train == 50000
    assert not (tmp_path / "absent").exists()  # nothing read, nothing downloaded


def test_a_missing_folder_is_a_data_error_for_describe_too(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        DATASETS["imagefolder"].describe(DataConfig(dataset="imagefolder", root=str(tmp_path / "absent")))


# ---------------------------------------------------------------------------------------------
# the randaugment view (ProMix's strong view) and the dataset's crop_then_flip


@pytest.mark.parametrize("crop_then_flip", [False, True])
def test_randaugment_view_takes_the_datasets_crop_then_flip(crop_then_flip: bool) -> None:
    b = build_data(DataConfig(image_size=16, train_subset=64), seed=3)
    b.view_options = {"crop_then_flip": True} if crop_then_flip else {}  # what Cifar100's entry gives
    per_sample = b.train_views(("randaugment",), "cpu")
    per_sample.set_epoch(2)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(mix_seed(3, 2, 5))
        expected = make_randaugment_transform(16, b.mean, b.std, crop_then_flip)(b.train.images[5])
    assert torch.equal(per_sample[5]["image"], expected)
    b.augment_on = "device"
    device = b.train_views(("weak", "randaugment"), "cpu")
    images, index = torch.stack([b.train.images[i] for i in range(8)]), torch.arange(8)
    views = device.batch_transform(images, index, 4)
    reference = BatchedRandAugment(16, b.mean, b.std, seed=3, crop_then_flip=crop_then_flip, slot=1)
    assert torch.equal(views[1], reference(images, index, 4))
