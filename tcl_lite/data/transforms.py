"""The reference's weak / strong / test views per sample, as torchvision v2 transforms on uint8 tensors.

Each is a view entry's ``per_sample`` form (``data.catalog`` registers them in ``VIEWS``; ``batched_views``
holds their batched form); ``make_transform`` makes any registered view by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torchvision.transforms import v2

from tcl_lite.data.entries import ViewContext
from tcl_lite.errors import DataError
from tcl_lite.registry import VIEWS

# The reference's strong view, shared with the batched device path (``batched_views``).
CROP_SCALE = (0.2, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)  # torchvision's default
JITTER = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue
JITTER_P, GRAYSCALE_P, SOLARIZE_P = 0.8, 0.2, 0.5
SOLARIZE_THRESHOLD = 128


def make_transform(kind: str, image_size: int, mean: Sequence[float], std: Sequence[float]) -> Callable[[Any], Any]:
    """The registered view ``kind``, per sample: uint8 [C, S, S] (already at ``image_size``) -> float32
    [C, S, S] normalised. All randomness comes from torch's global generator, which IndexedDataset seeds
    per (seed, epoch, index)."""
    ctx = ViewContext(image_size, tuple(float(m) for m in mean), tuple(float(s) for s in std))
    return VIEWS.get_checked(kind).per_sample(ctx)


def _finish(ctx: ViewContext) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(ctx.mean), list(ctx.std))]


def per_sample_weak(ctx: ViewContext) -> v2.Compose:
    """Random crop with padding S/8 + horizontal flip."""
    return v2.Compose([v2.RandomCrop(ctx.image_size, padding=ctx.image_size // 8), v2.RandomHorizontalFlip(),
                       *_finish(ctx)])


def per_sample_strong(ctx: ViewContext) -> v2.Compose:
    """RandomResizedCrop(scale 0.2-1), flip, ColorJitter(0.4, 0.4, 0.4, 0.1) with p=0.8, grayscale p=0.2,
    solarize at 128 with p=0.5."""
    return v2.Compose([
        v2.RandomResizedCrop(ctx.image_size, scale=CROP_SCALE, ratio=CROP_RATIO, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(*JITTER)], p=JITTER_P),
        v2.RandomGrayscale(p=GRAYSCALE_P),
        # On uint8 images, as the reference solarizes PIL images at 128.
        v2.RandomSolarize(threshold=SOLARIZE_THRESHOLD, p=SOLARIZE_P),
        *_finish(ctx),
    ])


def per_sample_test(ctx: ViewContext) -> v2.Compose:
    """No augmentation: only the conversion to float and the normalisation."""
    return v2.Compose(_finish(ctx))


class MultiView:
    """Several transforms of one image: ``MultiView([t1, t2])(img) -> [t1(img), t2(img)]``.

    The views draw from the generator one after another, so under a fixed seed the whole list is
    reproducible while the views differ from each other.
    """

    def __init__(self, transforms: Sequence[Callable[[torch.Tensor], Any]]) -> None:
        if not transforms:
            raise DataError("MultiView needs at least one transform")
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor) -> list[Any]:
        return [t(image) for t in self.transforms]

    def __len__(self) -> int:
        return len(self.transforms)

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(t) for t in self.transforms)
        return f"MultiView([\n  {inner}\n])"
