"""A data set's shape without its data, for the planner: the registry's ``Dataset.describe`` (split sizes
after the subsets and ``data.val_fraction``, classes, channels, image size; CIFAR's sizes are known, the
digits come with scikit-learn, image folders and file lists are counted without decoding an image).

Where an image folder's or a file list's files are not on this machine, the sizes are unknown: memory does
not depend on them, but the time of an epoch does, so the plan then reports per-step figures only, or
takes the sizes from ``--samples`` (``data.entries.describe_counts``).
"""

from __future__ import annotations

from dataclasses import dataclass

from tcl_lite.config import Config
from tcl_lite.data.build import dataset_entry, model_data_settings
from tcl_lite.data.entries import SplitCounts, describe_counts
from tcl_lite.errors import DataError

NOMINAL_BATCHES = 8  # a data set of unknown size stands in as this many batches (memory does not depend on it)


@dataclass(frozen=True)
class DatasetMeta:
    name: str
    train: int
    val: int
    test: int
    num_classes: int
    channels: int
    image_size: int
    view_options: dict
    sizes_known: bool = True
    note: str = ""  # why the sizes are not known, or where they come from


def dataset_meta(cfg: Config, samples: tuple[int, int] | None = None) -> DatasetMeta:
    """The shape of ``cfg.data``'s data set as the run would see it. ``samples``: (train, test) sizes to
    use instead of counting files (e.g. for a folder that is not on this machine)."""
    d, _ = model_data_settings(cfg.data, cfg.model)  # a pretrained timm model sets the image size
    entry = dataset_entry(d)
    options = dict(entry.view_options)
    try:
        info, note = entry.describe(d), ""
        if samples is not None:
            info = describe_counts(d, SplitCounts(samples[0], 0, samples[1], info.num_classes))
            note = "sizes from --samples"
    except DataError as e:
        classes = d.num_classes or 10  # what the files would say; a guess that changes the heads only
        if samples is None:
            nominal = NOMINAL_BATCHES * max(cfg.train.batch_size, cfg.train.eval_batch_size)
            return DatasetMeta(d.dataset, nominal, 0, nominal, classes, 3, d.image_size, options, False,
                               f"data not found ({e}); epoch and run figures need the sizes: pass --samples")
        info, note = describe_counts(d, SplitCounts(samples[0], 0, samples[1], classes)), "sizes from --samples"
    return DatasetMeta(info.name, info.train, info.val, info.test, info.num_classes, info.channels, info.image_size,
                       options, True, note)
