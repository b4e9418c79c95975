"""Some samples of a training set, as a dataset of their own (e.g. DivideMix's labeled and
unlabeled sets of an epoch)."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import Dataset


class SampleSubset(Dataset):
    """The samples ``indices`` of an ``IndexedDataset``; items keep their index in the full set.

    It holds its own view of the images (shared, not copied), so that its augmentation key
    (``set_epoch``) is its own: two subsets of one set iterated in the same step draw independent
    augmentations, each a function of (seed, key, index)."""

    def __init__(self, dataset: Any, indices: np.ndarray) -> None:
        self.dataset = dataset.with_transform(dataset.transform, dataset.batch_transform)
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.dataset[int(self.indices[i])]

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def finish_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        return self.dataset.finish_batch(batch)
