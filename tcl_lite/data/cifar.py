"""``data.dataset=cifar10`` / ``cifar100``: torchvision's CIFAR (the python version) under ``data.root``."""

from __future__ import annotations

from tcl_lite.config import DataConfig
from tcl_lite.data.datasets import TensorImages, load_cifar
from tcl_lite.data.entries import Dataset, RawData, SplitCounts


class Cifar10(Dataset):
    name = "cifar10"
    stats = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))  # the training set's own statistics
    # The constants each method's reference normalises with (``data.normalization``): TCL (Hzzone/TCL,
    # models/basic_template.py) and DivideMix (dataloader_cifar.py) the widespread std (0.2023, 0.1994, 0.2010);
    # ProMix (dataloader_cifarn.py) the training set's std to 3 decimals.
    normalizations = {"tcl": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
                      "dividemix": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
                      "promix": ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))}
    asymmetric_note = "cifar10"
    sizes = SplitCounts(50000, 0, 10000, 10)

    def read(self, cfg: DataConfig, seed: int) -> RawData:
        train, train_labels, classes = load_cifar(self.name, cfg.root, True, cfg.download, cfg.image_size)
        test, test_labels, _ = load_cifar(self.name, cfg.root, False, cfg.download, cfg.image_size)
        return RawData(TensorImages(train), train_labels, TensorImages(test), test_labels, classes, self.stats, True)

    def counts(self, cfg: DataConfig) -> SplitCounts:
        return self.sizes

    def asymmetric_scheme(self, class_names: list[str] | None) -> str | None:
        return self.name  # noise.asymmetric_map's map of the same name


class Cifar100(Cifar10):
    name = "cifar100"
    stats = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
    normalizations = {"tcl": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
                      "dividemix": ((0.507, 0.487, 0.441), (0.267, 0.256, 0.276)),
                      "promix": ((0.507, 0.487, 0.441), (0.267, 0.256, 0.276))}
    asymmetric_note = "cifar100"
    sizes = SplitCounts(50000, 0, 10000, 100)
    view_options = {"crop_then_flip": True}  # ProMix's reference crops, then flips, on CIFAR-100 (randaugment view)
