"""``data.dataset=filelist``: Clothing1M-style lists of ``relative/path label`` lines under ``data.root``."""

from __future__ import annotations

import numpy as np

from tcl_lite.config import DataConfig
from tcl_lite.data.datasets import FileImages, read_file_list
from tcl_lite.data.entries import Dataset, RawData, SplitCounts
from tcl_lite.errors import DataError

LIST_KEYS = ("data.train_list", "data.test_list", "data.val_list")


def _read_lists(cfg: DataConfig) -> tuple[dict[str, tuple[list[str], np.ndarray]], int]:
    """The lists that are set, by config key, and the number of classes (checked against every label)."""
    lists = dict(zip(LIST_KEYS, (cfg.train_list, cfg.test_list, cfg.val_list)))
    read = {key: read_file_list(spec, cfg.root, key) for key, spec in lists.items() if spec}
    found = int(max(labels.max() for _, labels in read.values())) + 1
    num_classes = cfg.num_classes or found
    for key, (_, labels) in read.items():
        if labels.min() < 0 or labels.max() >= num_classes:
            raise DataError(f"labels of {lists[key]!r} ({key}) range over [{labels.min()}, {labels.max()}], "
                            f"outside [0, data.num_classes={num_classes}); set data.num_classes "
                            "(0 = max label + 1) or fix the list")
    return read, num_classes


class FileList(Dataset):
    name = "filelist"

    def read(self, cfg: DataConfig, seed: int) -> RawData:
        read, num_classes = _read_lists(cfg)
        files = {key: (FileImages(paths, cfg.image_size), labels) for key, (paths, labels) in read.items()}
        test, val = files.get("data.test_list", (None, None)), files.get("data.val_list", (None, None))
        names = [str(k) for k in range(num_classes)]
        # The labels of a list are the user's (Clothing1M's are noisy): not known to be clean.
        return RawData(*files["data.train_list"], *test, names, self.stats, False, *val)

    def counts(self, cfg: DataConfig) -> SplitCounts:
        read, num_classes = _read_lists(cfg)  # reads the lists and checks the files exist; decodes no image
        return SplitCounts(*(len(read[k][0]) if k in read else 0 for k in ("data.train_list", "data.val_list",
                                                                            "data.test_list")), num_classes)
