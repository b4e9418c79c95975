"""Image storage, the indexed dataset the engine iterates, and the readers of each dataset layout.

Small datasets (digits, CIFAR) are held in memory as one uint8 tensor [N, 3, S, S]; image folders
and file lists keep only paths and decode each image when it is asked for, unless
``data.cache_decoded`` decodes them all once into such a tensor (``decoded_cache``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from tcl_lite.errors import DataError

# Decoded with Pillow (torchvision.io's decoders are deprecated since torchvision 0.29).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def mix_seed(seed: int, epoch: int, index: int) -> int:
    """A well-spread 63-bit seed from (seed, epoch, index); nearby triples give unrelated seeds."""
    h = 0
    for v in (seed, epoch, index):
        h = _splitmix64(h ^ (int(v) & _MASK64))
    return h >> 1  # manual_seed takes values < 2**63 without wrapping surprises


# ---------------------------------------------------------------------------------------------
# Image storage


class ImageSource(Protocol):
    """Indexable storage of uint8 images [3, S, S], already at the training size S."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> torch.Tensor: ...

    def subset(self, indices: np.ndarray) -> ImageSource: ...


class TensorImages:
    """All images in one uint8 tensor [N, 3, S, S] (digits, CIFAR: a few hundred MB at most)."""

    def __init__(self, images: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected a uint8 tensor [N, 3, H, W], got {images.dtype} "
                             f"{tuple(images.shape)}")
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]

    def subset(self, indices: np.ndarray) -> TensorImages:
        return TensorImages(self.images[torch.as_tensor(indices, dtype=torch.long)].contiguous())


class DecodedFiles(TensorImages):
    """Image files decoded once into memory (``data.cache_decoded``); ``paths`` still names each
    image's file (label issues, predictions and galleries show them)."""

    def __init__(self, images: torch.Tensor, paths: Sequence[str]) -> None:
        super().__init__(images)
        if len(paths) != len(self):
            raise ValueError(f"{len(paths)} paths for {len(self)} decoded images")
        self.paths = list(paths)

    def subset(self, indices: np.ndarray) -> DecodedFiles:
        return DecodedFiles(super().subset(indices).images, [self.paths[i] for i in indices])


def resize_center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """Shorter side to ``size`` then a centred ``size`` x ``size`` crop (works on [.., C, H, W])."""
    if tuple(image.shape[-2:]) == (size, size):
        return image
    image = TF.resize(image, [size], antialias=True)
    return TF.center_crop(image, [size, size])


class FileImages:
    """Image paths decoded on access (forced RGB) and resized/cropped to ``image_size``."""

    def __init__(self, paths: Sequence[str], image_size: int) -> None:
        self.paths = list(paths)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        path = self.paths[index]
        try:
            with Image.open(path) as img:
                # draft: let the JPEG decoder downscale by 2^k on the fly (large Clothing1M photos)
                img.draft("RGB", (self.image_size, self.image_size))
                image = TF.pil_to_tensor(img.convert("RGB"))
        except (OSError, ValueError) as e:
            raise DataError(f"cannot decode image {path!r} ({e}); replace or remove the file (supported: "
                            f"{', '.join(IMAGE_EXTENSIONS)})") from None
        return resize_center_crop(image, self.image_size)

    def subset(self, indices: np.ndarray) -> FileImages:
        return FileImages([self.paths[i] for i in indices], self.image_size)


# ---------------------------------------------------------------------------------------------
# The dataset the engine iterates


class IndexedDataset(Dataset):
    """Images + labels + a transform; items are ``{"index", "image", "label"}`` dicts.

    Augmentation randomness is a pure function of (seed, epoch, index), so a sample looks the same
    whatever the DataLoader workers, the process count or the batches skipped on resume. Call
    ``set_epoch`` before iterating each epoch (workers see it when they start, i.e. not with
    ``persistent_workers=True``).
    """

    def __init__(self, images: ImageSource, labels: np.ndarray, transform: Callable[[torch.Tensor], Any] | None,
                 seed: int = 0, batch_transform: Callable[..., Any] | None = None) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != (len(images),):
            raise ValueError(f"{len(images)} images but labels of shape {labels.shape}")
        self.images = images
        self.labels = labels
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0
        # augment_on=device: items are the decoded uint8 images and ``finish_batch`` makes the views
        self.batch_transform = batch_transform

    def __len__(self) -> int:
        return len(self.labels)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def with_transform(self, transform: Callable[[torch.Tensor], Any] | None,
                       batch_transform: Callable[..., Any] | None = None) -> IndexedDataset:
        """The same images and labels (shared, not copied) under another transform."""
        other = IndexedDataset(self.images, self.labels, transform, self.seed, batch_transform)
        other.epoch = self.epoch
        return other

    def finish_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The collated batch with its views: made here, on the batch's device, for the whole batch
        when the items are decoded images (``batch_transform``); unchanged otherwise."""
        if self.batch_transform is None:
            return batch
        return {**batch, "image": self.batch_transform(batch["image"], batch["index"], self.epoch)}

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        index %= n
        image = self.images[index]
        if self.transform is None:  # decode only: no randomness, so no generator to fork
            return {"index": index, "image": image, "label": int(self.labels[index])}
        # Only the CPU generator is forked and reseeded: torch.manual_seed would also reseed every
        # CUDA generator, which fork_rng(devices=[]) does not restore, so the caller's GPU RNG
        # (dropout, mixup on the device) would be clobbered by each sample.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(mix_seed(self.seed, self.epoch, index))
            image = self.transform(image)
        return {"index": index, "image": image, "label": int(self.labels[index])}


# ---------------------------------------------------------------------------------------------
# Readers: each returns images + integer labels for one split


def load_digits_images(image_size: int) -> tuple[torch.Tensor, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits as uint8 [N, 3, S, S] (grey replicated to RGB) and labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images).float().mul_(255.0 / 16.0)[:, None]  # values are 0..16
    if image_size != x.shape[-1]:
        x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear",
                                            align_corners=False, antialias=True)
    x = x.round_().clamp_(0, 255).to(torch.uint8)
    return x.expand(-1, 3, -1, -1).contiguous(), digits.target.astype(np.int64)


_CIFAR_DIRS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
_CIFAR_ARCHIVES = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}


def load_cifar(name: str, root: str, train: bool, download: bool,
               image_size: int) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    """CIFAR-10/100 through torchvision as uint8 [N, 3, S, S], labels and class names."""
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    try:
        ds = cls(root=root, train=train, download=download)
    except (RuntimeError, OSError) as e:  # URLError is an OSError; a missing/corrupt file a RuntimeError
        expected = Path(root) / _CIFAR_DIRS[name]
        why = (f"the download failed ({e})" if download
               else "data.download=false, so nothing was downloaded")
        raise DataError(
            f"{name} is not under data.root={root!r}: torchvision expects the python version of the "
            f"dataset in {str(expected)!r}, and {why}. Fix: download {_CIFAR_ARCHIVES[name]} from "
            f"https://www.cs.toronto.edu/~kriz/cifar.html and extract it into {root!r} (or set data.root "
            f"to the folder that holds {_CIFAR_DIRS[name]}). Offline, any image folder works instead with "
            "data.dataset=imagefolder: for CIFAR-10, extract ../shared/data/cifar10-jpeg.tar.gz somewhere "
            "outside the repository and set data.root=<that folder>/cifar10-jpeg") from None
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2)  # [N, 32, 32, 3] -> [N, 3, 32, 32]
    if image_size != images.shape[-1]:
        # In chunks: resizing goes through float, and 50k float images at once would be 600 MB.
        images = torch.cat([resize_center_crop(c, image_size) for c in images.split(4096)])
    labels = np.asarray(ds.targets, dtype=np.int64)
    return images.contiguous(), labels, list(ds.classes)


_FOLDER_LAYOUT = ("<root>/train/<class>/<image>, optionally <root>/val/<class>/<image> and "
                  "<root>/test/<class>/<image> with the same class folders")
OPTIONAL_SPLITS = ("val", "test")


def _class_folders(split_dir: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir())


def _images_under(folder: Path) -> list[str]:
    # Recursive and sorted exactly like torchvision's ImageFolder, so orders (and label files) match.
    found = []
    for dirpath, _, filenames in sorted(os.walk(folder, followlinks=True)):
        for name in sorted(filenames):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.join(dirpath, name))
    return found


def scan_image_folder(root: str) -> tuple[dict[str, tuple[list[str], np.ndarray]], list[str]]:
    """``{"train": (paths, labels), "val": ..., "test": ...}`` (val and test only when their folders
    exist) and the class names (the sorted folders of train/)."""
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"image folder data.root={root!r} does not exist; set data.root to a folder laid "
                        f"out as {_FOLDER_LAYOUT}")
    if not (base / "train").is_dir():
        raise DataError(f"image folder {str(base / 'train')!r} is missing; data.root={root!r} must be laid "
                        f"out as {_FOLDER_LAYOUT}")
    present = ["train"] + [s for s in OPTIONAL_SPLITS if (base / s).is_dir()]
    classes_of = {}
    for split in present:
        classes_of[split] = _class_folders(base / split)
        if not classes_of[split]:
            raise DataError(f"image folder {str(base / split)!r} has no class folders; expected "
                            f"{_FOLDER_LAYOUT}")
    classes = classes_of["train"]
    for split in present[1:]:
        if classes_of[split] != classes:
            only_train = sorted(set(classes) - set(classes_of[split]))
            only_other = sorted(set(classes_of[split]) - set(classes))
            raise DataError(f"class folders of {str(base / split)!r} differ from {str(base / 'train')!r} "
                            f"(only in train: {only_train[:10]}, only in {split}: {only_other[:10]}); "
                            f"expected {_FOLDER_LAYOUT}")
    splits = {}
    for split in present:
        paths: list[str] = []
        labels: list[int] = []
        for k, name in enumerate(classes):
            found = _images_under(base / split / name)
            if not found:
                raise DataError(f"class folder {str(base / split / name)!r} holds no images "
                                f"({', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder from "
                                f"every split ({', '.join(present)})")
            paths += found
            labels += [k] * len(found)
        splits[split] = (paths, np.asarray(labels, dtype=np.int64))
    return splits, classes


_LIST_FORMAT = "`relative/path.jpg <int label>` per line, paths relative to data.root"


def _read_lines(path: str, config_key: str) -> list[tuple[int, str]]:
    if not path:
        raise DataError(f"config key '{config_key}' is empty; set it to a list file ({_LIST_FORMAT})")
    if not os.path.isfile(path):
        raise DataError(f"list file {path!r} (config key '{config_key}') does not exist; set "
                        f"'{config_key}' to a text file of {_LIST_FORMAT}")
    try:
        with open(path, encoding="utf-8") as f:
            lines = [(n, line.strip()) for n, line in enumerate(f, 1)]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"list file {path!r} (config key '{config_key}') cannot be read as text ({e}); set "
                        f"'{config_key}' to a text file of {_LIST_FORMAT}") from None
    return [(n, line) for n, line in lines if line and not line.startswith("#")]


def _parse_label(text: str, where: str, config_key: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataError(f"{where}: label {text!r} is not an integer; lines of '{config_key}' must be "
                        f"{_LIST_FORMAT}") from None


def read_file_list(spec: str, root: str, config_key: str) -> tuple[list[str], np.ndarray]:
    """Paths (joined to ``root``) and labels of a list file.

    ``spec`` is either one file of ``path label`` lines, or Clothing1M's pair
    ``<key_list>,<label_kv>``: a file of bare paths plus a file of ``path label`` lines to look
    the labels up in.
    """
    rel_paths: list[str] = []
    labels: list[int] = []
    if "," in spec and not os.path.isfile(spec):
        key_list, kv_file = (s.strip() for s in spec.split(",", 1))
        table: dict[str, int] = {}
        for n, line in _read_lines(kv_file, config_key):
            parts = line.rsplit(None, 1)
            if len(parts) != 2:
                raise DataError(f"{kv_file}:{n}: malformed line {line!r}; expected {_LIST_FORMAT}")
            table[parts[0]] = _parse_label(parts[1], f"{kv_file}:{n}", config_key)
        for n, line in _read_lines(key_list, config_key):
            if line not in table:
                raise DataError(f"{key_list}:{n}: {line!r} has no label in {kv_file!r}; every listed path "
                                "must appear in the label file")
            rel_paths.append(line)
            labels.append(table[line])
    else:
        for n, line in _read_lines(spec, config_key):
            parts = line.rsplit(None, 1)
            if len(parts) != 2:
                raise DataError(f"{spec}:{n}: malformed line {line!r}; expected {_LIST_FORMAT} (a Clothing1M "
                                f"key list of bare paths goes with its label file: "
                                f"{config_key}=<key_list>,<label_kv>)")
            rel_paths.append(parts[0])
            labels.append(_parse_label(parts[1], f"{spec}:{n}", config_key))
    if not rel_paths:
        raise DataError(f"list file {spec!r} (config key '{config_key}') lists no images; expected "
                        f"{_LIST_FORMAT}")
    paths = [os.path.join(root, p) for p in rel_paths]
    # Check every file up front: a missing image should stop the run now, not hours into epoch 1.
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise DataError(f"{len(missing)} of {len(paths)} images listed in {spec!r} do not exist under "
                        f"data.root={root!r}, e.g. {missing[:3]}; set data.root to the folder the list's "
                        "paths are relative to, or fix the list")
    return paths, np.asarray(labels, dtype=np.int64)
