"""``data.dataset=imagefolder``: ``data.root/train/<class>/*`` (optionally ``val/``, ``test/``), decoded on access."""

from __future__ import annotations

from tcl_lite.config import DataConfig
from tcl_lite.data.datasets import FileImages, scan_image_folder
from tcl_lite.data.entries import Dataset, RawData, SplitCounts
from tcl_lite.data.noise import CIFAR10_CLASSES


class ImageFolder(Dataset):
    name = "imagefolder"
    asymmetric_note = "an image folder of the 10 CIFAR-10 classes"

    def read(self, cfg: DataConfig, seed: int) -> RawData:
        splits, classes = scan_image_folder(cfg.root)
        images = {k: (FileImages(paths, cfg.image_size), labels) for k, (paths, labels) in splits.items()}
        test_images, test_labels = images.get("test", (None, None))
        val_images, val_labels = images.get("val", (None, None))
        return RawData(*images["train"], test_images, test_labels, classes, self.stats, True, val_images, val_labels)

    def counts(self, cfg: DataConfig) -> SplitCounts:
        splits, classes = scan_image_folder(cfg.root)  # lists the files, decodes none
        return SplitCounts(*(len(splits[s][0]) if s in splits else 0 for s in ("train", "val", "test")), len(classes))

    def asymmetric_scheme(self, class_names: list[str] | None) -> str | None:
        # An image folder with exactly CIFAR-10's classes (e.g. ../shared/data/cifar10-jpeg) is CIFAR-10 in its
        # label order; None: the folder is not read yet, decided again once its classes are known.
        return "cifar10" if class_names is None or class_names == CIFAR10_CLASSES else None
