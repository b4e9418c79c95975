"""``build_data``: the dataset named by ``DataConfig`` with its noisy training labels, as a DataBundle."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from tcl_lite.config import DataConfig, ModelConfig
from tcl_lite.errors import DataError
from tcl_lite.models.timm_backbone import data_settings

from .batched_views import BatchedViews
from .datasets import (
    FileImages,
    ImageSource,
    IndexedDataset,
    TensorImages,
    load_cifar,
    load_digits_images,
    read_file_list,
    scan_image_folder,
)
from .decoded_cache import decode_collecting, wants_cache
from .noise import NOISE_TYPES, asymmetric_noise, pairflip_noise, read_label_file, symmetric_noise
from .transforms import VIEW_KINDS, MultiView, make_transform
from .verify import unreadable_images_error, verify_images

CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# An image folder with exactly these classes (e.g. ../shared/data/cifar10-jpeg) is CIFAR-10 in
# CIFAR-10's label order, so CIFAR-10's asymmetric noise applies to it too.
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# Clean agreement required between a label file's clean_label and the dataset's own labels; a file
# indexed in another order than the dataset (e.g. CIFAR-N on the JPEG folder) disagrees on ~90%.
_MAX_CLEAN_DISAGREEMENT = 0.01


@dataclass
class DataBundle:
    train: IndexedDataset  # noisy labels, test transform
    test: IndexedDataset | None  # clean labels, test transform; None when the dataset has no test split
    num_classes: int
    noisy_labels: np.ndarray  # int64 [N_train]: what training uses
    true_labels: np.ndarray | None  # int64 [N_train] when known
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int
    image_size: int
    class_names: list[str]
    val: IndexedDataset | None = None  # labels as the user has them (noisy), test transform

    augment_on: str = "workers"  # data.augment_on: auto | device | workers

    def train_views(self, views: tuple[str, ...], device: torch.device | str | None = None) -> IndexedDataset:
        """The train set under one view (image is a Tensor) or several (a list in ``views`` order).

        With ``augment_on`` resolving to device (``resolve_augment_on``), the items are the decoded
        uint8 images and ``finish_batch`` makes the views of a collated batch on its device.
        """
        views = (views,) if isinstance(views, str) else tuple(views)
        if not views or any(v not in VIEW_KINDS for v in views):
            raise DataError(f"train_views({views!r}): give one or more of {', '.join(VIEW_KINDS)}")
        if resolve_augment_on(self.augment_on, device) == "device":
            return self.train.with_transform(
                None, BatchedViews(views, self.image_size, self.mean, self.std, self.train.seed))
        transforms = [make_transform(v, self.image_size, self.mean, self.std) for v in views]
        return self.train.with_transform(transforms[0] if len(transforms) == 1 else MultiView(transforms))

    def train_eval(self) -> IndexedDataset:
        """Train images + noisy labels under the test transform (full passes, kNN features)."""
        return self.train.with_transform(make_transform("test", self.image_size, self.mean, self.std))


def resolve_augment_on(setting: str, device: torch.device | str | None) -> str:
    """``data.augment_on``: auto is device on an accelerator (GPU), workers on the CPU (or none given)."""
    if setting not in ("auto", "device", "workers"):
        raise DataError(f"unknown data.augment_on {setting!r}; choose auto, device or workers")
    if setting != "auto":
        return setting
    return "device" if device is not None and torch.device(device).type != "cpu" else "workers"


@dataclass
class _Raw:
    """A dataset as read, before subsets and noise."""
    train_images: ImageSource
    train_labels: np.ndarray
    test_images: ImageSource | None
    test_labels: np.ndarray | None
    class_names: list[str]
    stats: tuple[tuple[float, ...], tuple[float, ...]]
    labels_are_clean: bool  # False for file lists, whose labels are already noisy (Clothing1M)
    val_images: ImageSource | None = None  # a validation split the user provides (val/ folder, val_list)
    val_labels: np.ndarray | None = None


def balanced_subset(labels: np.ndarray, size: int, num_classes: int, seed: int) -> np.ndarray:
    """Sorted indices of ``size`` samples, as even across classes as the class sizes allow.

    Round-robin over a seeded class order, each class in a seeded random order: sample j of class c
    is taken before sample j+1 of any class.
    """
    n = len(labels)
    if size <= 0 or size >= n:
        return np.arange(n)
    rng = np.random.default_rng([seed, 0x5B5E7])  # its own stream: independent of the noise draw
    rank = np.empty(n, dtype=np.int64)
    for k in range(num_classes):
        members = np.flatnonzero(labels == k)
        rank[rng.permutation(members)] = np.arange(len(members))
    class_order = rng.permutation(num_classes)[labels]
    chosen = np.lexsort((class_order, rank))[:size]
    return np.sort(chosen)


def _digits(cfg: DataConfig, seed: int) -> _Raw:
    from sklearn.model_selection import train_test_split

    images, labels = load_digits_images(cfg.image_size)
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=cfg.digits_test_fraction,
                                           stratify=labels, random_state=seed % 2**32)
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    train = images[torch.from_numpy(train_idx)]
    # Statistics of the train split (grey replicated, so the 3 channels share one value).
    x = train.float().div_(255.0)
    mean = tuple(float(v) for v in x.mean(dim=(0, 2, 3)))
    std = tuple(float(v) for v in x.std(dim=(0, 2, 3)))
    return _Raw(TensorImages(train), labels[train_idx], TensorImages(images[torch.from_numpy(test_idx)]),
                labels[test_idx], [str(k) for k in range(10)], (mean, std), True)


def _cifar(cfg: DataConfig) -> _Raw:
    train, train_labels, classes = load_cifar(cfg.dataset, cfg.root, True, cfg.download, cfg.image_size)
    test, test_labels, _ = load_cifar(cfg.dataset, cfg.root, False, cfg.download, cfg.image_size)
    stats = CIFAR10_STATS if cfg.dataset == "cifar10" else CIFAR100_STATS
    return _Raw(TensorImages(train), train_labels, TensorImages(test), test_labels, classes, stats, True)


def _imagefolder(cfg: DataConfig) -> _Raw:
    splits, classes = scan_image_folder(cfg.root)
    images = {k: (FileImages(paths, cfg.image_size), labels) for k, (paths, labels) in splits.items()}
    test_images, test_labels = images.get("test", (None, None))
    val_images, val_labels = images.get("val", (None, None))
    return _Raw(*images["train"], test_images, test_labels, classes, IMAGENET_STATS, True, val_images, val_labels)


def _filelist(cfg: DataConfig) -> _Raw:
    lists = {"data.train_list": cfg.train_list, "data.test_list": cfg.test_list, "data.val_list": cfg.val_list}
    read = {key: read_file_list(spec, cfg.root, key) for key, spec in lists.items() if spec}
    found = int(max(labels.max() for _, labels in read.values())) + 1
    num_classes = cfg.num_classes or found
    for key, (_, labels) in read.items():
        if labels.min() < 0 or labels.max() >= num_classes:
            raise DataError(f"labels of {lists[key]!r} ({key}) range over [{labels.min()}, {labels.max()}], "
                            f"outside [0, data.num_classes={num_classes}); set data.num_classes "
                            "(0 = max label + 1) or fix the list")
    files = {key: (FileImages(paths, cfg.image_size), labels) for key, (paths, labels) in read.items()}
    test, val = files.get("data.test_list", (None, None)), files.get("data.val_list", (None, None))
    names = [str(k) for k in range(num_classes)]
    return _Raw(*files["data.train_list"], *test, names, IMAGENET_STATS, False, *val)


def _asymmetric_scheme(cfg: DataConfig, class_names: list[str] | None) -> str:
    """The asymmetric map to use ("cifar10" / "cifar100"), or a DataError when there is none."""
    if cfg.dataset in ("cifar10", "cifar100"):
        return cfg.dataset
    if cfg.dataset == "imagefolder" and (class_names is None or class_names == CIFAR10_CLASSES):
        return "cifar10"  # None: the folder is not read yet, decided again once its classes are known
    raise DataError(f"asymmetric noise is defined for cifar10 and cifar100 (and an image folder of the "
                    f"10 CIFAR-10 classes), not data.dataset={cfg.dataset!r}"
                    + (f" with classes {class_names[:10]}" if class_names else "")
                    + "; set data.noise_type=symmetric, or noise_type=file with a data.noise_file")


def _verify_files(cfg: DataConfig, *sources: ImageSource) -> None:
    """``data.verify_images``: open every decoded-on-access image now, when there are few enough."""
    paths = [p for s in sources if isinstance(s, FileImages) for p in s.paths]
    if not paths:
        return
    if len(paths) > cfg.verify_images:
        if cfg.verify_images:
            print(f"data.verify_images: {len(paths)} images exceed data.verify_images={cfg.verify_images}; not "
                  "opening them up front (a corrupt one stops the run when its batch comes up)", flush=True)
        return
    verify_images(paths, f"data.root={cfg.root!r}")


def _decode_or_verify(cfg: DataConfig, *sources: ImageSource | None) -> list[ImageSource | None]:
    """``data.cache_decoded``: decode the sources that fit into memory once, here in the main process
    before any DataLoader worker exists; that decoding checks them. The rest: ``data.verify_images``.
    Either way one error names every unreadable image before the run directory is created."""
    out, bad = [], []
    for images in sources:
        if images is not None and wants_cache(images, cfg.cache_decoded):
            images, failed = decode_collecting(images, cfg.num_workers)
            bad += failed
        out.append(images)
    if bad:
        raise unreadable_images_error(bad, sum(len(s) for s in sources if s is not None), f"data.root={cfg.root!r}")
    _verify_files(cfg, *(s for s in out if s is not None))
    return out


def model_data_settings(cfg: DataConfig, model: ModelConfig | None) -> tuple[DataConfig, tuple | None]:
    """A timm model with pretrained weights (and ``model.pretrained_transforms``) sets the image size
    and the normalisation to its weights' config: ``(data config, (mean, std) or None)``."""
    if model is None or not model.arch.startswith("timm:") or not model.pretrained_transforms \
            or not (model.pretrained or model.pretrained_path):
        return cfg, None
    size, mean, std = data_settings(model.arch)
    return dataclasses.replace(cfg, image_size=size), (mean, std)


def build_data(cfg: DataConfig, seed: int, model: ModelConfig | None = None) -> DataBundle:
    """Read ``cfg.dataset``, take the subsets, apply the label noise, and wrap it all as a DataBundle.

    ``model``: a pretrained timm model's input size and mean/std replace ``cfg.image_size`` and the
    dataset's statistics (``model_data_settings``)."""
    cfg, model_stats = model_data_settings(cfg, model)
    if cfg.noise_type not in NOISE_TYPES:
        raise DataError(f"unknown data.noise_type {cfg.noise_type!r}; choose one of {', '.join(NOISE_TYPES)}")
    if cfg.noise_type == "asymmetric":
        _asymmetric_scheme(cfg, None)  # fail before reading (and checking) a whole dataset
    if cfg.dataset == "digits":
        raw = _digits(cfg, seed)
    elif cfg.dataset in ("cifar10", "cifar100"):
        raw = _cifar(cfg)
    elif cfg.dataset == "imagefolder":
        raw = _imagefolder(cfg)
    elif cfg.dataset == "filelist":
        raw = _filelist(cfg)
    else:
        raise DataError(f"unknown data.dataset {cfg.dataset!r}; choose digits, cifar10, cifar100, "
                        "imagefolder or filelist")
    num_classes = len(raw.class_names)
    given = raw.train_labels
    true = given if raw.labels_are_clean else None

    # A label file is indexed over the full training set, so it is read before taking a subset.
    noisy = given
    if cfg.noise_type == "file":
        label_file = read_label_file(cfg.noise_file, len(given), num_classes, cfg.noise_key)
        noisy = label_file.labels
        if label_file.clean is not None:
            disagree = float(np.mean(label_file.clean != true)) if true is not None else 0.0
            if disagree > _MAX_CLEAN_DISAGREEMENT:
                raise DataError(
                    f"label file {cfg.noise_file!r}: its clean_label disagrees with the labels of "
                    f"data.dataset={cfg.dataset} on {disagree:.0%} of the samples, so "
                    "it is indexed in another order (CIFAR-N files follow torchvision's CIFAR order: use "
                    "data.dataset=cifar10/cifar100 with the original CIFAR files)")
            true = label_file.clean

    train_idx = balanced_subset(given, cfg.train_subset, num_classes, seed)
    train_images, test_images, test_labels = raw.train_images, raw.test_images, raw.test_labels
    if len(train_idx) < len(given):
        train_images = train_images.subset(train_idx)
        given, noisy = given[train_idx], noisy[train_idx]
        true = true[train_idx] if true is not None else None
    if test_labels is not None:
        test_idx = balanced_subset(test_labels, cfg.test_subset, num_classes, seed)
        if len(test_idx) < len(test_labels):
            test_images, test_labels = test_images.subset(test_idx), test_labels[test_idx]

    # Synthetic noise is drawn on the samples actually trained on, so exactly round(r*N) are resampled.
    if cfg.noise_type == "symmetric":
        noisy = symmetric_noise(given, num_classes, cfg.noise_rate, seed)
        true = given
    elif cfg.noise_type == "asymmetric":
        noisy = asymmetric_noise(given, _asymmetric_scheme(cfg, raw.class_names), cfg.noise_rate, seed)
        true = given
    elif cfg.noise_type == "pairflip":
        noisy = pairflip_noise(given, num_classes, cfg.noise_rate, seed)
        true = given

    noisy = np.ascontiguousarray(noisy, dtype=np.int64)
    val_images, val_labels = raw.val_images, raw.val_labels
    if cfg.val_fraction > 0:
        if val_images is not None:
            raise DataError(f"data.val_fraction={cfg.val_fraction} and a validation split of the dataset "
                            f"({'data.val_list' if cfg.val_list else 'the val/ folder'}) are both given; "
                            "set data.val_fraction=0 to use the given one, or remove it")
        keep, held = validation_split(noisy, cfg.val_fraction, seed)
        val_images, val_labels = train_images.subset(held), noisy[held]
        train_images, noisy = train_images.subset(keep), noisy[keep]
        true = true[keep] if true is not None else None
    train_images, test_images, val_images = _decode_or_verify(cfg, train_images, test_images, val_images)

    mean, std = (tuple(float(v) for v in s) for s in (model_stats or raw.stats))
    test_tf = make_transform("test", cfg.image_size, mean, std)

    def split(images: ImageSource | None, labels: np.ndarray | None) -> IndexedDataset | None:
        return None if images is None else IndexedDataset(images, labels, test_tf, seed)

    return DataBundle(
        train=IndexedDataset(train_images, noisy, test_tf, seed),
        test=split(test_images, test_labels),
        num_classes=num_classes,
        noisy_labels=noisy,
        true_labels=None if true is None else np.ascontiguousarray(true, dtype=np.int64),
        mean=mean,
        std=std,
        channels=3,
        image_size=cfg.image_size,
        class_names=list(raw.class_names),
        val=split(val_images, val_labels),
        augment_on=cfg.augment_on,
    )


def validation_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, validation) indices: ``fraction`` of the samples, stratified by ``labels`` (the
    noisy labels the user has), fixed by the seed."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(labels)
    if counts[counts > 0].min() < 2 or round(fraction * len(labels)) < np.count_nonzero(counts):
        raise DataError(f"data.val_fraction={fraction}: {len(labels)} training samples in "
                        f"{np.count_nonzero(counts)} classes (smallest: {counts[counts > 0].min()}) are too few "
                        "for a stratified validation split with every class; raise data.val_fraction, or give "
                        "a val/ folder or data.val_list")
    rng = np.random.default_rng([seed, 0x7A1])  # its own stream: independent of the noise and subsets
    train, val = train_test_split(np.arange(len(labels)), test_size=fraction, stratify=labels,
                                  random_state=int(rng.integers(2**31)))
    return np.sort(train), np.sort(val)
