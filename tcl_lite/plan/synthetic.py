"""A DataBundle of the right sizes whose images are black and made on access: the real datasets,
transforms, views and loaders of the methods run on it, and no data set is read or held."""

from __future__ import annotations

import numpy as np
import torch

from tcl_lite.data import DataBundle, IndexedDataset, make_transform
from tcl_lite.plan.dataset_meta import DatasetMeta

# Normalisation of the synthetic images: any values do (the pixels are zeros), these are CIFAR-like.
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


class ZeroImages:
    """``n`` black uint8 images [3, S, S], each made when asked for (an ``ImageSource``)."""

    def __init__(self, n: int, size: int) -> None:
        self.n, self.size = n, size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> torch.Tensor:
        if not -self.n <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} images")
        return torch.zeros(3, self.size, self.size, dtype=torch.uint8)

    def subset(self, indices: np.ndarray) -> ZeroImages:
        return ZeroImages(len(indices), self.size)


def synthetic_data(meta: DatasetMeta, seed: int = 0) -> DataBundle:
    """The bundle ``build_data`` would return for ``meta``, with black images and labels cycling
    through the classes (noisy labels equal to the true ones). Views are made per sample on the CPU
    (``augment_on=workers``): the batch a step receives has the same shapes either way."""
    k, size = meta.num_classes, meta.image_size
    test_tf = make_transform("test", size, MEAN, STD)

    def split(n: int) -> IndexedDataset | None:
        return IndexedDataset(ZeroImages(n, size), np.arange(n) % k, test_tf, seed) if n else None

    labels = np.arange(meta.train, dtype=np.int64) % k
    return DataBundle(train=split(meta.train), test=split(meta.test), num_classes=k, noisy_labels=labels,
                      true_labels=labels.copy(), mean=MEAN, std=STD, channels=meta.channels, image_size=size,
                      class_names=[str(c) for c in range(k)], val=split(meta.val), augment_on="workers",
                      view_options=dict(meta.view_options))
