"""``build_data``: the dataset named by ``DataConfig`` with its noisy training labels, as a DataBundle.

A pipeline of named stages, each a function of the config and the previous stage's ``Stages``:
``read`` (the dataset entry's ``read``, and a label file) -> ``subset`` -> ``noise`` -> ``validation`` ->
``views`` (decoding or checking the images, the bundle whose ``train_views`` makes the training views).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tcl_lite.config import DataConfig, ModelConfig
from tcl_lite.errors import ConfigError, DataError
from tcl_lite.models.archs import weights_input
from tcl_lite.registry import DATASETS, VIEWS

from .batched_views import BatchedViews
from .datasets import FileImages, ImageSource, IndexedDataset
from .decoded_cache import decode_collecting, wants_cache
from .entries import Dataset, Stats, ViewContext
from .noise import NOISE_TYPES, asymmetric_noise, pairflip_noise, read_label_file, symmetric_noise
from .transforms import MultiView, make_transform
from .verify import unreadable_images_error, verify_images

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
    view_options: dict[str, Any] = field(default_factory=dict)  # the dataset entry's (ViewContext.options)

    def train_views(self, views: tuple[str, ...], device: torch.device | str | None = None) -> IndexedDataset:
        """The train set under one view (image is a Tensor) or several (a list in ``views`` order), each a
        registered view (``tcl_lite.registry.VIEWS``).

        With ``augment_on`` resolving to device (``resolve_augment_on``), the items are the decoded
        uint8 images and ``finish_batch`` makes the views of a collated batch on its device.
        """
        views = (views,) if isinstance(views, str) else tuple(views)
        if not views:
            raise DataError(f"train_views(()): give one or more views of {', '.join(VIEWS.shown())}")
        if resolve_augment_on(self.augment_on, device, views) == "device":
            return self.train.with_transform(None, BatchedViews(views, self.image_size, self.mean, self.std,
                                                                self.train.seed, self.view_options))
        ctx = ViewContext(self.image_size, self.mean, self.std, self.view_options)
        transforms = [VIEWS.get_checked(v).per_sample(ctx) for v in views]
        return self.train.with_transform(transforms[0] if len(transforms) == 1 else MultiView(transforms))

    def train_eval(self) -> IndexedDataset:
        """Train images + noisy labels under the test transform (full passes, kNN features)."""
        return self.train.with_transform(make_transform("test", self.image_size, self.mean, self.std))


def resolve_augment_on(setting: str, device: torch.device | str | None = None, views: tuple[str, ...] = ()) -> str:
    """``data.augment_on``: auto is device on any training device (the CPU too: the batched path gave more
    samples per CPU-second in every case of bench/loader_throughput.py, BENCHMARKS.md) when every one of
    ``views`` has a batched form, else workers; without a device (a bundle used outside a run), workers.
    The trainer resolves auto once per run (``engine/placement.py``: runs recorded before auto covered
    the CPU keep their rule)."""
    if setting not in ("auto", "device", "workers"):
        raise DataError(f"unknown data.augment_on {setting!r}; choose auto, device or workers")
    if setting != "auto":
        return setting
    batched = all(VIEWS.get_checked(v).batched is not None for v in views)
    return "device" if device is not None and batched else "workers"


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
    """Pretrained weights that declare their input (a timm model's, with ``model.pretrained_transforms``) set
    the image size and the normalisation: ``(data config, (mean, std) or None)`` (``models.archs.weights_input``)."""
    settings = weights_input(model) if model is not None else None
    if settings is None:
        return cfg, None
    size, mean, std = settings
    return dataclasses.replace(cfg, image_size=size), (mean, std)


@dataclass
class Stages:
    """The data between two stages of ``build_data``."""

    entry: Dataset
    train: ImageSource
    given: np.ndarray  # the training labels as read
    noisy: np.ndarray  # what training will use
    true: np.ndarray | None  # when known
    test: ImageSource | None
    test_labels: np.ndarray | None
    val: ImageSource | None
    val_labels: np.ndarray | None
    class_names: list[str]
    stats: tuple[tuple[float, ...], tuple[float, ...]]


def build_data(cfg: DataConfig, seed: int, model: ModelConfig | None = None, *, reference: str = "",
               stats: Stats | None = None) -> DataBundle:
    """Read ``cfg.dataset``, take the subsets, apply the label noise, hold out the validation split and wrap
    it all as a DataBundle.

    ``model``: a pretrained timm model's input size and mean/std replace ``cfg.image_size`` and the
    dataset's statistics (``model_data_settings``). ``reference``: the method's normalisation set
    (``Method.normalization``), what ``data.normalization=auto`` picks where the dataset names it.
    ``stats``: (mean, std) to use whatever the config says (a trained run's recorded normalisation)."""
    cfg, model_stats = model_data_settings(cfg, model)
    s = subset(cfg, seed, read(cfg, seed))
    s = validation(cfg, seed, noise(cfg, seed, s))
    return views(cfg, seed, s, stats or model_stats or normalization(cfg, s.entry, s.stats, reference))


def normalization(cfg: DataConfig, entry: Dataset, own: Stats, reference: str = "") -> Stats:
    """The (mean, std) of ``data.normalization``: a set the dataset entry names (``Dataset.normalizations``),
    ``dataset`` (its own ``own``), or ``auto`` = the set named ``reference`` if the dataset has one, else its own."""
    name = cfg.normalization
    if name == "auto":
        name = reference if reference in entry.normalizations else "dataset"
    if name == "dataset":
        return own
    if name not in entry.normalizations:
        names = ", ".join(["auto", "dataset", *entry.normalizations])
        raise DataError(f"data.normalization={name!r}: data.dataset={cfg.dataset} has no such set of constants; "
                        f"choose one of {names}")
    return entry.normalizations[name]


def dataset_entry(cfg: DataConfig) -> Dataset:
    """The registered entry of ``data.dataset`` (a DataError naming the registered ones otherwise)."""
    try:
        return DATASETS.get_checked(cfg.dataset)
    except ConfigError as e:  # a DataConfig built in Python never met the config loader's check
        raise DataError(str(e)) from None


def read(cfg: DataConfig, seed: int) -> Stages:
    """The dataset as its entry reads it, with a label file's labels (``noise_type=file``): such a file is
    indexed over the full training set, so it is read before any subset."""
    if cfg.noise_type not in NOISE_TYPES:
        raise DataError(f"unknown data.noise_type {cfg.noise_type!r}; choose one of {', '.join(NOISE_TYPES)}")
    entry = dataset_entry(cfg)
    if cfg.noise_type == "asymmetric":
        asymmetric_scheme(cfg, entry, None)  # fail before reading (and checking) a whole dataset
    raw = entry.read(cfg, seed)
    given = raw.train_labels
    true = given if raw.labels_are_clean else None
    noisy = given
    if cfg.noise_type == "file":
        label_file = read_label_file(cfg.noise_file, len(given), len(raw.class_names), cfg.noise_key)
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
    return Stages(entry, raw.train_images, given, noisy, true, raw.test_images, raw.test_labels, raw.val_images,
                  raw.val_labels, list(raw.class_names), raw.stats)


def subset(cfg: DataConfig, seed: int, s: Stages) -> Stages:
    """``data.train_subset`` / ``test_subset``: class-balanced subsets fixed by the seed."""
    k = len(s.class_names)
    train_idx = balanced_subset(s.given, cfg.train_subset, k, seed)
    if len(train_idx) < len(s.given):
        s = dataclasses.replace(s, train=s.train.subset(train_idx), given=s.given[train_idx],
                                noisy=s.noisy[train_idx], true=None if s.true is None else s.true[train_idx])
    if s.test_labels is not None:
        test_idx = balanced_subset(s.test_labels, cfg.test_subset, k, seed)
        if len(test_idx) < len(s.test_labels):
            s = dataclasses.replace(s, test=s.test.subset(test_idx), test_labels=s.test_labels[test_idx])
    return s


def noise(cfg: DataConfig, seed: int, s: Stages) -> Stages:
    """Synthetic label noise, drawn on the samples actually trained on, so exactly round(r*N) are resampled
    (``none`` and ``file``: the labels as read)."""
    if cfg.noise_type == "symmetric":
        s = dataclasses.replace(s, noisy=symmetric_noise(s.given, len(s.class_names), cfg.noise_rate, seed),
                                true=s.given)
    elif cfg.noise_type == "asymmetric":
        scheme = asymmetric_scheme(cfg, s.entry, s.class_names)
        s = dataclasses.replace(s, noisy=asymmetric_noise(s.given, scheme, cfg.noise_rate, seed), true=s.given)
    elif cfg.noise_type == "pairflip":
        s = dataclasses.replace(s, noisy=pairflip_noise(s.given, len(s.class_names), cfg.noise_rate, seed),
                                true=s.given)
    return dataclasses.replace(s, noisy=np.ascontiguousarray(s.noisy, dtype=np.int64))


def asymmetric_scheme(cfg: DataConfig, entry: Dataset, class_names: list[str] | None) -> str:
    """The asymmetric map the dataset takes (``noise.asymmetric_map``), or a DataError naming where one exists."""
    scheme = entry.asymmetric_scheme(class_names)
    if scheme:
        return scheme
    where = [DATASETS[name].asymmetric_note for name in DATASETS if DATASETS[name].asymmetric_note]
    raise DataError(f"asymmetric noise is defined for {' and '.join(where)}, not data.dataset={cfg.dataset!r}"
                    + (f" with classes {class_names[:10]}" if class_names else "")
                    + "; set data.noise_type=symmetric, or noise_type=file with a data.noise_file")


def validation(cfg: DataConfig, seed: int, s: Stages) -> Stages:
    """``data.val_fraction``: hold out that fraction of the training set (stratified by its noisy labels),
    unless the dataset gives a validation split itself (then the fraction is an error)."""
    if cfg.val_fraction <= 0:
        return s
    if s.val is not None:
        raise DataError(f"data.val_fraction={cfg.val_fraction} and a validation split of the dataset "
                        f"({'data.val_list' if cfg.val_list else 'the val/ folder'}) are both given; "
                        "set data.val_fraction=0 to use the given one, or remove it")
    keep, held = validation_split(s.noisy, cfg.val_fraction, seed)
    return dataclasses.replace(s, val=s.train.subset(held), val_labels=s.noisy[held], train=s.train.subset(keep),
                               given=s.given[keep], noisy=s.noisy[keep], true=None if s.true is None else s.true[keep])


def views(cfg: DataConfig, seed: int, s: Stages, stats: Stats) -> DataBundle:
    """The bundle: the images decoded (or checked) once, every split under the test transform, and the
    dataset's normalisation and view options for the training views (``DataBundle.train_views``)."""
    train, test, val = _decode_or_verify(cfg, s.train, s.test, s.val)
    mean, std = (tuple(float(v) for v in stat) for stat in stats)
    test_tf = make_transform("test", cfg.image_size, mean, std)

    def split(images: ImageSource | None, labels: np.ndarray | None) -> IndexedDataset | None:
        return None if images is None else IndexedDataset(images, labels, test_tf, seed)

    return DataBundle(train=IndexedDataset(train, s.noisy, test_tf, seed), test=split(test, s.test_labels),
                      num_classes=len(s.class_names), noisy_labels=s.noisy,
                      true_labels=None if s.true is None else np.ascontiguousarray(s.true, dtype=np.int64),
                      mean=mean, std=std, channels=3, image_size=cfg.image_size, class_names=list(s.class_names),
                      val=split(val, s.val_labels), augment_on=cfg.augment_on, view_options=dict(s.entry.view_options))


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
