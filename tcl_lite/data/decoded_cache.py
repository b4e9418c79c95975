"""Decode-once cache (``data.cache_decoded``): an image folder or file list decoded into one uint8 tensor.

Without it every epoch, evaluation and detection pass decodes every JPEG again; CIFAR-sized folders
take a few hundred MB decoded. The cache is filled in the main process before any training
DataLoader exists, so forked workers read it copy-on-write (nothing is copied or re-decoded), and
a spawned worker receives it through torch's shared memory.
"""

from __future__ import annotations

import psutil
import torch

from tcl_lite.errors import DataError

from .datasets import DecodedFiles, FileImages, ImageSource
from .verify import image_problem, unreadable_images_error

_DECODE_BATCH = 256


def decoded_bytes(images: FileImages) -> int:
    """Memory of ``images`` once decoded: uint8 [N, 3, S, S]."""
    return len(images) * 3 * images.image_size**2


def wants_cache(images: ImageSource, mode: str) -> bool:
    """on: always; off: never; auto: when decoded it fits in a quarter of the available memory."""
    if mode not in ("auto", "on", "off"):
        raise DataError(f"unknown data.cache_decoded {mode!r}; choose auto, on or off")
    if not isinstance(images, FileImages) or mode == "off":
        return False
    return mode == "on" or decoded_bytes(images) <= psutil.virtual_memory().available // 4


class _Tolerant(torch.utils.data.Dataset):
    """``images[i]`` and ``""``, or a blank image and why ``images[i]`` cannot be decoded."""

    def __init__(self, images: FileImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        try:
            return self.images[index], ""
        except DataError:
            s = self.images.image_size
            return torch.zeros((3, s, s), dtype=torch.uint8), image_problem(self.images.paths[index]) or "unreadable"


def decode_collecting(images: FileImages, num_workers: int = 0) -> tuple[DecodedFiles, list[tuple[str, str]]]:
    """Every image of ``images`` decoded (``num_workers`` processes, in order) into one tensor, and the
    ``(path, why)`` of those that cannot be decoded, so that one error can name them all."""
    s = images.image_size
    out = torch.empty((len(images), 3, s, s), dtype=torch.uint8)
    loader = torch.utils.data.DataLoader(_Tolerant(images), batch_size=_DECODE_BATCH, shuffle=False,
                                         num_workers=num_workers)
    start, bad = 0, []
    for batch, problems in loader:
        out[start:start + len(batch)] = batch
        bad += [(images.paths[start + i], why) for i, why in enumerate(problems) if why]
        start += len(batch)
    return DecodedFiles(out, images.paths), bad


def decode_all(images: FileImages, num_workers: int = 0) -> DecodedFiles:
    """Every image of ``images`` decoded into one tensor; DataError naming each unreadable one."""
    decoded, bad = decode_collecting(images, num_workers)
    if bad:
        raise unreadable_images_error(bad, len(images), "the image files")
    return decoded
