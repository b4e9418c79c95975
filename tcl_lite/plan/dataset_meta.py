"""A data set's shape without its data: split sizes (after the subsets and ``val_fraction``), classes,
channels and image size, which is all the planner needs.

CIFAR's sizes are known, the digits come with scikit-learn, image folders and file lists are counted
(their files listed, no image decoded). Where those files are not on this machine the sizes are
unknown: memory does not depend on them, but the time of an epoch does, so the plan then reports
per-step figures only (or takes ``--samples``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tcl_lite.config import Config
from tcl_lite.data.build import model_data_settings
from tcl_lite.data.datasets import read_file_list, scan_image_folder
from tcl_lite.errors import DataError

# (train, test, classes) of the data sets whose sizes are fixed
KNOWN_SIZES = {"digits": (1797, 0, 10), "cifar10": (50000, 10000, 10), "cifar100": (50000, 10000, 100)}


@dataclass(frozen=True)
class DatasetMeta:
    name: str
    train: int
    val: int
    test: int
    num_classes: int
    channels: int
    image_size: int
    sizes_known: bool = True
    note: str = ""  # why the sizes are not known, or where they come from


def _subset(n: int, size: int) -> int:
    """``balanced_subset``'s size: ``size`` samples when 0 < size < n, else all."""
    return size if 0 < size < n else n


def _split_sizes(cfg: Config) -> tuple[int, int, int, int]:
    """(train, val, test, classes) as ``build_data`` reads them, before the subsets."""
    d = cfg.data
    if d.dataset == "digits":
        total, _, classes = KNOWN_SIZES["digits"]
        test = math.ceil(d.digits_test_fraction * total)  # train_test_split's rounding
        return total - test, 0, test, classes
    if d.dataset in ("cifar10", "cifar100"):
        return KNOWN_SIZES[d.dataset][0], 0, *KNOWN_SIZES[d.dataset][1:]
    if d.dataset == "imagefolder":
        splits, classes = scan_image_folder(d.root)
        return (*(len(splits[s][0]) if s in splits else 0 for s in ("train", "val", "test")), len(classes))
    lists = {"data.train_list": d.train_list, "data.val_list": d.val_list, "data.test_list": d.test_list}
    read = {key: read_file_list(spec, d.root, key) for key, spec in lists.items() if spec}
    classes = d.num_classes or int(max(labels.max() for _, labels in read.values())) + 1
    sizes = [len(read[key][0]) if key in read else 0 for key in lists]
    return sizes[0], sizes[1], sizes[2], classes


def dataset_meta(cfg: Config, samples: tuple[int, int] | None = None) -> DatasetMeta:
    """The shape of ``cfg.data``'s data set as the run would see it. ``samples``: (train, test) sizes to
    use instead of counting files (e.g. for a folder that is not on this machine)."""
    d, _ = model_data_settings(cfg.data, cfg.model)  # a pretrained timm model sets the image size
    note = ""
    try:
        train, val, test, classes = _split_sizes(cfg)
    except DataError as e:
        if samples is None:
            # Memory does not depend on the sizes; a nominal set of batches stands in for the data.
            nominal = 8 * max(cfg.train.batch_size, cfg.train.eval_batch_size)
            return DatasetMeta(d.dataset, nominal, 0, nominal, d.num_classes or 10, 3, d.image_size, False,
                               f"data not found ({e}); epoch and run figures need the sizes: pass --samples")
        train, val, test, classes = samples[0], 0, samples[1], d.num_classes or 10
        note = "sizes from --samples"
    if samples is not None and not note:
        train, test, note = samples[0], samples[1], "sizes from --samples"
    train, test = _subset(train, d.train_subset), _subset(test, d.test_subset)
    if d.val_fraction > 0:
        val = math.ceil(d.val_fraction * train)  # validation_split's rounding
        train -= val
    # Every image is read as RGB (datasets.py), whatever the files hold.
    return DatasetMeta(d.dataset, train, val, test, classes, 3, d.image_size, True, note)
