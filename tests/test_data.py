"""Datasets, bundles, views and the determinism of augmentation."""

from __future__ import annotations

import math
import random
import socket
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from tcl_lite.config import DataConfig
from tcl_lite.data import (
    DataBundle,
    IndexedDataset,
    MultiView,
    balanced_subset,
    build_data,
    make_transform,
    symmetric_noise,
)
from tcl_lite.errors import DataError

CIFAR_JPEG = Path(__file__).resolve().parents[1].parent / "shared/data/cifar10-jpeg.tar.gz"


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return build_data(DataConfig(), seed=0)


# ---------------------------------------------------------------------------------------------
# digits bundle


def test_digits_bundle_shapes_and_labels(digits: DataBundle) -> None:
    b = digits
    assert len(b.train) + len(b.test) == 1797
    assert len(b.test) == math.ceil(0.3 * 1797)  # scikit-learn rounds the test share up
    assert (b.num_classes, b.channels, b.image_size) == (10, 3, 16)
    assert b.class_names == [str(k) for k in range(10)]
    item = b.train[5]
    assert item["index"] == 5 and item["label"] == b.noisy_labels[5]
    assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32
    assert torch.equal(item["image"][0], item["image"][1])  # grey replicated to RGB
    assert b.noisy_labels.dtype == np.int64 and b.noisy_labels.shape == (len(b.train),)
    assert b.true_labels is not None and b.true_labels.shape == b.noisy_labels.shape
    # Default noise: symmetric 0.4, real flip rate about 0.4 * 0.9.
    assert abs(np.mean(b.noisy_labels != b.true_labels) - 0.36) < 0.05
    # The split is stratified: each class is about 30% test.
    test_counts = np.bincount(b.test.labels, minlength=10)
    assert np.all(np.abs(test_counts / (test_counts + np.bincount(b.true_labels, minlength=10)) - 0.3) < 0.02)


def test_digits_statistics_normalise_the_train_split(digits: DataBundle) -> None:
    assert len(set(digits.mean)) == 1 and len(set(digits.std)) == 1  # one grey value per channel
    images = torch.stack([digits.train_eval()[i]["image"] for i in range(len(digits.train))])
    assert abs(images.mean().item()) < 1e-3 and abs(images.std().item() - 1) < 1e-2


def test_noise_none_and_same_seed_same_bundle() -> None:
    b = build_data(DataConfig(noise_type="none"), seed=1)
    assert np.array_equal(b.noisy_labels, b.true_labels)
    again = build_data(DataConfig(noise_type="none"), seed=1)
    assert torch.equal(b.train[0]["image"], again.train[0]["image"])
    other = build_data(DataConfig(noise_type="none"), seed=2)  # another split
    assert not all(torch.equal(b.test[i]["image"], other.test[i]["image"]) for i in range(5))


def test_train_views_api(digits: DataBundle) -> None:
    single = digits.train_views(("strong",))
    assert isinstance(single[0]["image"], torch.Tensor)
    views = digits.train_views(("test", "weak", "strong", "test"))
    assert views.images is digits.train.images and views.labels is digits.train.labels  # no copy
    plain = digits.train_eval()[7]["image"]
    out = views[7]
    assert out["index"] == 7 and out["label"] == digits.noisy_labels[7]
    assert isinstance(out["image"], list) and len(out["image"]) == 4
    assert torch.equal(out["image"][0], plain) and torch.equal(out["image"][3], plain)  # in order
    assert all(v.shape == (3, 16, 16) for v in out["image"])
    assert not torch.equal(out["image"][2], plain)
    with pytest.raises(DataError, match="weak, strong, test"):
        digits.train_views(("weak", "blurry"))


def test_augmentation_is_a_function_of_seed_epoch_index(digits: DataBundle) -> None:
    views = digits.train_views(("weak", "strong", "strong"))
    a = views[11]["image"]
    assert all(torch.equal(x, y) for x, y in zip(a, views[11]["image"]))
    assert not torch.equal(a[1], a[2])  # the two strong views differ
    # Another dataset object, other items fetched first: the same sample.
    fresh = build_data(DataConfig(), seed=0).train_views(("weak", "strong", "strong"))
    fresh[3], fresh[40]
    assert all(torch.equal(x, y) for x, y in zip(a, fresh[11]["image"]))
    views.set_epoch(1)
    b = views[11]["image"]
    assert not torch.equal(a[1], b[1]) and not torch.equal(a[2], b[2])
    views.set_epoch(0)
    assert torch.equal(views[11]["image"][1], a[1])
    other_seed = IndexedDataset(views.images, views.labels, views.transform, seed=1)
    assert not torch.equal(other_seed[11]["image"][1], a[1])


def test_getitem_leaves_global_rngs_alone(digits: DataBundle) -> None:
    views = digits.train_views(("weak", "strong"))
    torch.manual_seed(123)
    random.seed(4)
    np.random.seed(5)
    states = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    for i in range(5):
        views[i]
    assert torch.equal(torch.get_rng_state(), states[0])
    assert random.getstate() == states[1] and np.array_equal(np.random.get_state()[1], states[2])


def test_subsets_are_class_balanced_and_fixed_by_seed() -> None:
    cfg = DataConfig(train_subset=100, test_subset=50, noise_type="none")
    b = build_data(cfg, seed=0)
    assert np.array_equal(np.bincount(b.noisy_labels, minlength=10), np.full(10, 10))
    assert np.array_equal(np.bincount(b.test.labels, minlength=10), np.full(10, 5))
    again = build_data(cfg, seed=0)
    assert torch.equal(b.train[17]["image"], again.train[17]["image"])
    labels = np.array([0] * 50 + [1] * 3 + [2] * 50)
    pick = balanced_subset(labels, 30, 3, seed=0)
    assert len(pick) == 30 and np.bincount(labels[pick]).tolist() in ([14, 3, 13], [13, 3, 14])
    assert not np.array_equal(pick, balanced_subset(labels, 30, 3, seed=1))


def test_symmetric_noise_is_drawn_on_the_subset() -> None:
    b = build_data(DataConfig(train_subset=200, noise_rate=0.5), seed=3)
    assert len(b.train) == 200 and len(b.true_labels) == 200
    assert np.array_equal(b.noisy_labels, symmetric_noise(b.true_labels, 10, 0.5, seed=3))


def test_asymmetric_on_digits_is_an_error() -> None:
    with pytest.raises(DataError, match="cifar10 and cifar100"):
        build_data(DataConfig(noise_type="asymmetric"), seed=0)


def test_label_file_noise_on_digits(tmp_path: Path, digits: DataBundle) -> None:
    n = len(digits.train)
    labels = (digits.true_labels + 1) % 10
    np.save(tmp_path / "noisy.npy", labels)
    b = build_data(DataConfig(noise_type="file", noise_file=str(tmp_path / "noisy.npy")), seed=0)
    assert np.array_equal(b.noisy_labels, labels) and np.array_equal(b.true_labels, digits.true_labels)
    assert b.train[3]["label"] == labels[3]
    # A CIFAR-N style file whose clean_label is in another order than the dataset is refused.
    torch.save({"worse_label": labels, "clean_label": np.roll(digits.true_labels, 1)}, tmp_path / "n.pt")
    with pytest.raises(DataError, match="n.pt.*another order"):
        build_data(DataConfig(noise_type="file", noise_file=str(tmp_path / "n.pt")), seed=0)
    np.save(tmp_path / "short.npy", labels[:-1])
    with pytest.raises(DataError, match=f"short.npy.*length {n - 1}.*N={n}"):
        build_data(DataConfig(noise_type="file", noise_file=str(tmp_path / "short.npy")), seed=0)


def test_make_transform_and_multiview() -> None:
    img = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    test = make_transform("test", 8, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert torch.allclose(test(img), img.float() / 127.5 - 1)
    views = MultiView([test, make_transform("weak", 8, (0.5,) * 3, (0.5,) * 3), test])(img)
    assert len(views) == 3 and torch.equal(views[0], views[2])
    with pytest.raises(DataError, match="weak, strong, test"):
        make_transform("medium", 8, (0.5,) * 3, (0.5,) * 3)


def test_dataloader_with_workers_is_reproducible() -> None:
    views = build_data(DataConfig(train_subset=48), seed=0).train_views(("weak", "strong", "strong"))
    views.set_epoch(2)

    def batches(workers: int) -> list[dict]:
        loader = DataLoader(views, batch_size=16, shuffle=True, num_workers=workers,
                            generator=torch.Generator().manual_seed(9))
        return list(loader)

    first, second, serial = batches(2), batches(2), batches(0)
    for a, b, c in zip(first, second, serial):
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["index"], c["index"])
        assert torch.equal(a["label"], torch.from_numpy(views.labels[a["index"].numpy()]))
        assert len(a["image"]) == 3 and a["image"][0].shape == (16, 3, 16, 16)
        for x, y, z in zip(a["image"], b["image"], c["image"]):
            assert torch.equal(x, y) and torch.equal(x, z)
    assert sorted(torch.cat([b["index"] for b in first]).tolist()) == list(range(48))
    views.set_epoch(3)
    assert not torch.equal(batches(2)[0]["image"][1], first[0]["image"][1])


# ---------------------------------------------------------------------------------------------
# image folders


def _png(path: Path, size: tuple[int, int], value: int, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, 255 - value, 0)
    Image.new(mode, size, color).save(path)


def _folder(root: Path, classes: tuple[str, ...] = ("cat", "ant", "bee"), train: int = 4,
            test: int = 2) -> Path:
    for k, name in enumerate(classes):
        for split, count in (("train", train), ("test", test)):
            for i in range(count):
                # Mixed sizes and a grey PNG: everything must come out RGB at image_size.
                mode = "L" if i == 0 else "RGB"
                _png(root / split / name / f"{i:03d}.png", (20 + 4 * i, 12), 40 * k + i, mode)
    return root


def test_imagefolder(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs")
    (root / "train" / "ant" / "notes.txt").write_text("not an image")
    b = build_data(DataConfig(dataset="imagefolder", root=str(root), image_size=8, noise_type="none"), seed=0)
    assert b.class_names == ["ant", "bee", "cat"]  # sorted, like torchvision ImageFolder
    assert (len(b.train), len(b.test), b.num_classes) == (12, 6, 3)
    assert b.noisy_labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert b.test.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert b.mean == (0.485, 0.456, 0.406)
    item = b.train[9]  # cat (class 2, created first), image 1: RGB colour (1, 254, 0)
    assert item["label"] == 2 and item["image"].shape == (3, 8, 8)
    pixel = item["image"][:, 4, 4] * torch.tensor(b.std) + torch.tensor(b.mean)
    assert torch.allclose(pixel * 255, torch.tensor([1.0, 254.0, 0.0]), atol=1.5)
    grey = b.train[8]["image"]  # a one-channel PNG, forced to 3 channels
    assert grey.shape == (3, 8, 8)
    views = b.train_views(("weak", "strong"))[0]["image"]
    assert [v.shape for v in views] == [(3, 8, 8), (3, 8, 8)]


def test_imagefolder_of_cifar10_classes_takes_asymmetric_noise(tmp_path: Path) -> None:
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    root = _folder(tmp_path / "c10", classes, train=2, test=1)
    cfg = DataConfig(dataset="imagefolder", root=str(root), image_size=8, noise_type="asymmetric",
                     noise_rate=1.0)
    b = build_data(cfg, seed=0)
    assert b.true_labels.tolist() == [k for k in range(10) for _ in range(2)]
    assert b.noisy_labels.tolist() == [k for k in (0, 1, 0, 5, 7, 3, 6, 7, 8, 1) for _ in range(2)]
    other = _folder(tmp_path / "three")  # any other classes: no asymmetric map
    with pytest.raises(DataError, match="asymmetric.*'ant', 'bee', 'cat'"):
        build_data(DataConfig(dataset="imagefolder", root=str(other), noise_type="asymmetric"), seed=0)


@pytest.mark.parametrize("breakage,expected", [
    ("no_root", ["absent", "train/<class>"]),
    ("no_train", ["train", "is missing", "train/<class>"]),
    ("class_mismatch", ["only in train: ['cat']", "only in test: ['dog']"]),
    ("empty_class", ["bee", "holds no images"]),
])
def test_imagefolder_errors(tmp_path: Path, breakage: str, expected: list[str]) -> None:
    root = _folder(tmp_path / "imgs")
    if breakage == "no_root":
        root = tmp_path / "absent"
    elif breakage == "no_train":
        (root / "train").rename(root / "training")
    elif breakage == "class_mismatch":
        (root / "test" / "cat").rename(root / "test" / "dog")
    else:
        for p in (root / "train" / "bee").iterdir():
            p.unlink()
    with pytest.raises(DataError) as info:
        build_data(DataConfig(dataset="imagefolder", root=str(root)), seed=0)
    for text in expected:
        assert text in str(info.value)


@pytest.mark.skipif(not CIFAR_JPEG.is_file(), reason=f"{CIFAR_JPEG} is absent (shared data not mounted)")
def test_imagefolder_from_cifar10_jpeg_archive(tmp_path: Path) -> None:
    wanted = {(split, cls): 5 for split in ("train", "test") for cls in ("airplane", "automobile")}
    with tarfile.open(CIFAR_JPEG) as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 4 or wanted.get((parts[1], parts[2]), 0) == 0:
                continue
            wanted[parts[1], parts[2]] -= 1
            target = tmp_path.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
            if not any(wanted.values()):
                break
    root = tmp_path / "cifar10-jpeg"
    cfg = DataConfig(dataset="imagefolder", root=str(root), image_size=32, noise_type="none")
    b = build_data(cfg, seed=0)
    assert b.class_names == ["airplane", "automobile"]
    assert b.noisy_labels.tolist() == [0] * 5 + [1] * 5 and b.test.labels.tolist() == [0] * 5 + [1] * 5
    image = b.test[0]["image"]
    assert image.shape == (3, 32, 32) and image.std() > 0.1  # a real picture, not a blank
    small = build_data(DataConfig(dataset="imagefolder", root=str(root), image_size=16,
                                  noise_type="symmetric", noise_rate=1.0), seed=0)
    assert small.train_views(("strong",))[4]["image"].shape == (3, 16, 16)
    assert small.true_labels.tolist() == [0] * 5 + [1] * 5


# ---------------------------------------------------------------------------------------------
# file lists


def _filelist(tmp_path: Path) -> DataConfig:
    root = tmp_path / "images"
    train_lines, test_lines = [], []
    for i in range(6):
        _png(root / "train" / f"{i}.png", (10, 10), 30 * i)
        train_lines.append(f"train/{i}.png {i % 3}")
    for i in range(3):
        _png(root / "test" / f"{i}.png", (10, 10), 50 * i)
        test_lines.append(f"test/{i}.png {i}")
    (tmp_path / "train.txt").write_text("\n".join(train_lines) + "\n")
    (tmp_path / "test.txt").write_text("\n".join(test_lines) + "\n\n")
    return DataConfig(dataset="filelist", root=str(root), train_list=str(tmp_path / "train.txt"),
                      test_list=str(tmp_path / "test.txt"), image_size=8, noise_type="none")


def test_filelist(tmp_path: Path) -> None:
    cfg = _filelist(tmp_path)
    b = build_data(cfg, seed=0)
    assert (len(b.train), len(b.test), b.num_classes) == (6, 3, 3)
    assert b.noisy_labels.tolist() == [0, 1, 2, 0, 1, 2] and b.true_labels is None
    assert b.train[2]["image"].shape == (3, 8, 8) and b.train[2]["label"] == 2
    cfg.num_classes = 14  # Clothing1M-style: more classes than the labels seen
    assert build_data(cfg, seed=0).num_classes == 14
    # noise_type=file replaces the list labels.
    (tmp_path / "relabel.csv").write_text("index,label\n" + "".join(f"{i},{(i + 1) % 3}\n" for i in range(6)))
    cfg.noise_type, cfg.noise_file = "file", str(tmp_path / "relabel.csv")
    b = build_data(cfg, seed=0)
    assert b.noisy_labels.tolist() == [1, 2, 0, 1, 2, 0] and b.true_labels is None


def test_filelist_clothing1m_key_list_and_label_file(tmp_path: Path) -> None:
    cfg = _filelist(tmp_path)
    (tmp_path / "keys.txt").write_text("train/3.png\ntrain/0.png\n")
    (tmp_path / "kv.txt").write_text("train/0.png 2\ntrain/1.png 0\ntrain/3.png 1\n")
    cfg.train_list = f"{tmp_path / 'keys.txt'},{tmp_path / 'kv.txt'}"
    b = build_data(cfg, seed=0)
    assert b.noisy_labels.tolist() == [1, 2] and len(b.train) == 2


@pytest.mark.parametrize("breakage,expected", [
    ("missing_list", ["nowhere.txt", "data.train_list"]),
    ("malformed", ["train.txt:3", "train/2.png", "<int label>"]),
    ("not_int", ["train.txt:2", "'one'"]),
    ("missing_image", ["train/ghost.png", "1 of 7", "data.root"]),
    ("out_of_range", ["data.num_classes=2", "train.txt"]),
])
def test_filelist_errors(tmp_path: Path, breakage: str, expected: list[str]) -> None:
    cfg = _filelist(tmp_path)
    lines = (tmp_path / "train.txt").read_text().splitlines()
    if breakage == "missing_list":
        cfg.train_list = str(tmp_path / "nowhere.txt")
    elif breakage == "malformed":
        lines[2] = "train/2.png"
    elif breakage == "not_int":
        lines[1] = "train/1.png one"
    elif breakage == "missing_image":
        lines.append("train/ghost.png 1")
    else:
        cfg.num_classes = 2
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        build_data(cfg, seed=0)
    for text in expected:
        assert text in str(info.value)


# ---------------------------------------------------------------------------------------------
# CIFAR without the files


def _cifar_host_reachable() -> bool:
    try:
        socket.create_connection(("www.cs.toronto.edu", 443), timeout=3).close()
        return True
    except OSError:
        return False


@pytest.mark.parametrize("download", [True, False])
def test_cifar_missing_offline(tmp_path: Path, download: bool) -> None:
    # Offline, download=True really tries and fails; online it would fetch 170 MB, so skip there.
    if download and _cifar_host_reachable():
        pytest.skip("the CIFAR host is reachable: the offline download failure cannot be exercised")
    cfg = DataConfig(dataset="cifar10", root=str(tmp_path / "cifar"), download=download)
    with pytest.raises(DataError) as info:
        build_data(cfg, seed=0)
    message = str(info.value)
    for text in ("data.root", str(tmp_path / "cifar" / "cifar-10-batches-py"), "data.dataset=imagefolder",
                 "cifar10-jpeg"):
        assert text in message


def test_cached_decode_equals_decoding_on_access(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """data.cache_decoded: decoded once (here by 2 worker processes) into a uint8 tensor holding
    exactly what decoding each file on access gives; auto caches when it fits in a quarter of the
    available memory; views through a loader with workers are the same either way."""
    from tcl_lite.data import decoded_cache
    from tcl_lite.data.datasets import FileImages, TensorImages

    root = _folder(tmp_path / "imgs", train=5, test=2)
    for i, path in enumerate(sorted((root / "train").rglob("*.png"))[::2]):  # some real JPEGs too
        Image.open(path).convert("RGB").resize((30 + i, 22)).save(path.with_suffix(".jpg"), quality=80)
        path.unlink()
    base = {"dataset": "imagefolder", "root": str(root), "image_size": 12, "noise_type": "none"}
    lazy = build_data(DataConfig(**base, cache_decoded="off"), seed=0)
    cached = build_data(DataConfig(**base, cache_decoded="on", num_workers=2), seed=0)
    assert isinstance(lazy.train.images, FileImages) and isinstance(cached.train.images, TensorImages)
    assert isinstance(cached.test.images, TensorImages)
    for a, b in ((lazy.train, cached.train), (lazy.test, cached.test)):
        assert len(a) == len(b) and all(torch.equal(a.images[i], b.images[i]) for i in range(len(a)))
        assert b.images.images.dtype == torch.uint8 and b.images.images.shape == (len(a), 3, 12, 12)
    assert isinstance(build_data(DataConfig(**base), seed=0).train.images, TensorImages)  # auto, small

    def strong_views(bundle: DataBundle) -> list[torch.Tensor]:
        loader = DataLoader(bundle.train_views(("strong",)), batch_size=5, num_workers=2)
        return [batch["image"] for batch in loader]

    assert all(torch.equal(x, y) for x, y in zip(strong_views(lazy), strong_views(cached)))

    class Scarce:
        available = 100  # bytes: nothing fits
    monkeypatch.setattr(decoded_cache.psutil, "virtual_memory", lambda: Scarce)
    assert isinstance(build_data(DataConfig(**base), seed=0).train.images, FileImages)
    with pytest.raises(DataError, match="cache_decoded"):
        build_data(DataConfig(**base, cache_decoded="yes"), seed=0)
