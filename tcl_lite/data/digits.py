"""``data.dataset=digits``: scikit-learn's 1,797 bundled 8x8 digits, split into train and test by the seed."""

from __future__ import annotations

import math

import numpy as np
import torch

from tcl_lite.config import DataConfig
from tcl_lite.data.datasets import TensorImages, load_digits_images
from tcl_lite.data.entries import Dataset, RawData, SplitCounts

SIZE, CLASSES = 1797, 10


class Digits(Dataset):
    name = "digits"
    stats = None  # the training split's own statistics, computed when read

    def read(self, cfg: DataConfig, seed: int) -> RawData:
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
        return RawData(TensorImages(train), labels[train_idx], TensorImages(images[torch.from_numpy(test_idx)]),
                       labels[test_idx], [str(k) for k in range(CLASSES)], (mean, std), True)

    def counts(self, cfg: DataConfig) -> SplitCounts:
        test = math.ceil(cfg.digits_test_fraction * SIZE)  # train_test_split rounds the test share up
        return SplitCounts(SIZE - test, 0, test, CLASSES)
