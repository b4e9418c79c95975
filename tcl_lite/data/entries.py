"""What a dataset entry and a view entry are (no torch here: the declarations and the planner read these).

A dataset entry (``DATASETS``, ``data.dataset=NAME``) is a ``Dataset``: ``read`` returns the data as read
(``RawData``: images, labels, class names, normalisation), which ``build_data``'s stages then subset, make
noisy, split and wrap; ``counts`` returns the split sizes without reading any image, from which ``describe``
derives the run's shape (``DatasetInfo``). A view entry (``VIEWS``, named by ``Method.views``) is a
``View``: the same training view per sample (torchvision, in the DataLoader workers) and for a whole batch
on the training device (``data.augment_on=device``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from tcl_lite.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

    from tcl_lite.config import DataConfig
    from tcl_lite.data.datasets import ImageSource

Stats = tuple[tuple[float, ...], tuple[float, ...]]  # (mean, std) per channel
IMAGENET_STATS: Stats = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass(frozen=True)
class DatasetInfo:
    """The shape of a dataset as a run would see it, known without reading its images: split sizes after
    ``data.train_subset``/``test_subset`` and the validation split, classes, channels, image size and the
    default normalisation (None where it is computed from the training images, e.g. the digits')."""

    name: str
    train: int
    val: int
    test: int
    num_classes: int
    channels: int
    image_size: int
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None


class SplitCounts(NamedTuple):
    """Sizes as read, before subsets and ``data.val_fraction`` (val: a split the dataset itself gives)."""

    train: int
    val: int
    test: int
    num_classes: int


@dataclass
class RawData:
    """A dataset as read, before subsets and noise."""

    train_images: ImageSource
    train_labels: np.ndarray
    test_images: ImageSource | None
    test_labels: np.ndarray | None
    class_names: list[str]
    stats: Stats
    labels_are_clean: bool  # False for file lists, whose labels are already noisy (Clothing1M)
    val_images: ImageSource | None = None  # a validation split the user provides (val/ folder, val_list)
    val_labels: np.ndarray | None = None


def subset_size(n: int, size: int) -> int:
    """How many of ``n`` samples ``data.train_subset``/``test_subset`` = ``size`` keeps (``balanced_subset``)."""
    return size if 0 < size < n else n


def describe_counts(cfg: DataConfig, counts: SplitCounts, stats: Stats | None = None) -> DatasetInfo:
    """The run's shape of a dataset with these split sizes as read: after the subsets and the validation split
    (``build_data``'s arithmetic; e.g. for sizes a user gives where the files are absent)."""
    train, val = subset_size(counts.train, cfg.train_subset), counts.val
    test = subset_size(counts.test, cfg.test_subset)
    if cfg.val_fraction > 0:
        val = math.ceil(cfg.val_fraction * train)  # scikit-learn's train_test_split rounds the held-out share up
        train -= val
    mean, std = stats or (None, None)
    return DatasetInfo(cfg.dataset, train, val, test, counts.num_classes, 3, cfg.image_size, mean, std)


class Dataset:
    """A ``data.dataset`` entry. Subclasses implement ``read`` and ``counts``; register one with
    ``data.catalog.register_dataset`` (class attributes ``name`` and ``help``)."""

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    #: the default normalisation; None: computed from the training images when they are read
    stats: ClassVar[Stats | None] = IMAGENET_STATS
    #: named mean/std sets besides ``stats`` (named ``dataset``), e.g. the constants a method's reference
    #: implementation normalised with: ``data.normalization`` picks one (``auto``: the method's ``normalization``)
    normalizations: ClassVar[Mapping[str, Stats]] = {}
    #: options of the training views (``ViewContext.options``), e.g. ``{"crop_then_flip": True}``
    view_options: ClassVar[Mapping[str, Any]] = {}
    #: where ``data.noise_type=asymmetric`` applies, in words for the error elsewhere ("" = nowhere)
    asymmetric_note: ClassVar[str] = ""

    def read(self, cfg: DataConfig, seed: int) -> RawData:
        """The data as read (``seed``: a split the dataset draws itself, e.g. the digits' test share)."""
        raise NotImplementedError

    def counts(self, cfg: DataConfig) -> SplitCounts:
        """The split sizes and class count, without decoding any image."""
        raise NotImplementedError

    def asymmetric_scheme(self, class_names: list[str] | None) -> str | None:
        """The asymmetric noise map (``noise.asymmetric_map`` name) for these classes (None: not read yet),
        or None where there is none."""
        return None

    def describe(self, cfg: DataConfig) -> DatasetInfo:
        """The dataset's shape under ``cfg`` (after the subsets and the validation split), without reading it
        (a DataError where the files it counts are absent)."""
        return describe_counts(cfg, self.counts(cfg), self.stats)


def no_val_list(cfg: DataConfig) -> None:
    """The config check of a dataset that reads no ``data.val_list`` (every one but ``filelist``)."""
    if cfg.val_list:
        raise ConfigError(f"config key 'data.val_list' is for data.dataset=filelist, not {cfg.dataset}; an image "
                          "folder takes a val/ folder, any dataset data.val_fraction")


@dataclass(frozen=True)
class ViewContext:
    """What a view is made for: the images' size and normalisation, and the dataset's view options."""

    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class View:
    """A training view. ``per_sample(ctx)``: a transform uint8 [3, S, S] -> float32 [3, S, S] normalised,
    drawing from torch's global generator (which ``IndexedDataset`` seeds per sample). ``batched(ctx)``: an op
    ``(x, keys, slot) -> view`` on a float batch holding uint8 values [B, 3, S, S], each sample's parameters
    drawn from stream ``slot`` of its key (``batched_views.sample_keys``), returning uint8 values (normalised
    by the caller); None if the view has no batched form (then only ``data.augment_on=workers`` makes it)."""

    per_sample: Callable[[ViewContext], Callable[[Any], Any]]
    batched: Callable[[ViewContext], Callable[[Any, Any, int], Any]] | None = None
