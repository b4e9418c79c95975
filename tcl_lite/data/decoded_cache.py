"""Decode-once cache (``data.cache_decoded``): an image folder or file list decoded into one uint8 tensor.

Without it every epoch, evaluation and detection pass decodes every JPEG again; CIFAR-sized folders
take a few hundred MB decoded. The cache is filled in the main process before any training
DataLoader exists, so forked workers read it copy-on-write (nothing is copied or re-decoded), and
a spawned worker receives it through torch's shared memory.
"""

from __future__ import annotations

import psutil
import torch

from .datasets import DataError, FileImages, ImageSource, TensorImages

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


def decode_all(images: FileImages, num_workers: int = 0) -> TensorImages:
    """Every image of ``images`` decoded (``num_workers`` processes, in order) into one tensor."""
    s = images.image_size
    out = torch.empty((len(images), 3, s, s), dtype=torch.uint8)
    loader = torch.utils.data.DataLoader(images, batch_size=_DECODE_BATCH, shuffle=False, num_workers=num_workers)
    start = 0
    for batch in loader:  # a broken image raises its DataError here, before any training
        out[start:start + len(batch)] = batch
        start += len(batch)
    return TensorImages(out)


def cache_decoded(images: ImageSource, mode: str, num_workers: int = 0) -> ImageSource:
    """``images`` decoded into memory when ``data.cache_decoded`` (``mode``) asks for it, else as is."""
    return decode_all(images, num_workers) if wants_cache(images, mode) else images
