"""Training views made for a whole batch on the training device (``data.augment_on=device``).

The DataLoader workers only decode (uint8 [3, S, S]); this module turns the collated uint8 batch
into the method's views with the operations of ``transforms.make_transform`` (torchvision v2 on
uint8, one sample at a time), applied to all samples at once, each with its own parameters:

* every parameter has the per-sample pipeline's distribution: RandomResizedCrop's scale/ratio
  with torchvision's ten tries and centre-crop fallback, flips, ColorJitter's factors and its
  random order, the grayscale / solarize / jitter probabilities, the weak view's pad-and-crop;
* the pixel arithmetic follows torchvision's uint8 kernels (bilinear resize rounded, colour
  operations truncated to integers after each step), so a view differs from torchvision's with the
  same parameters by rounding only (``tests/test_batched_views.py``);
* the parameters are a pure function of (seed, epoch, index, view slot): a counter-based
  generator (SplitMix64, evaluated for all samples at once) replaces torch's global generator, so
  a sample's views do not depend on the batch it is in, the micro-batch split, the process count
  or a resume. The draws differ from the per-sample path's (another generator): the same
  (seed, epoch, index) gives a different, equally distributed, view under ``augment_on=workers``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tcl_lite.data.entries import ViewContext
from tcl_lite.errors import DataError
from tcl_lite.registry import VIEWS

from .transforms import (
    CROP_RATIO,
    CROP_SCALE,
    GRAYSCALE_P,
    JITTER,
    JITTER_P,
    SOLARIZE_P,
    SOLARIZE_THRESHOLD,
)

_GAMMA = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _absorb(h: np.ndarray, value: np.ndarray | int) -> np.ndarray:
    # One step of datasets.mix_seed: h = splitmix64(h ^ value).
    return _mix((h ^ np.asarray(value).astype(np.uint64)) + _GAMMA)


def sample_keys(seed: int, epoch: int, index: np.ndarray) -> np.ndarray:
    """``datasets.mix_seed(seed, epoch, i)`` for every ``i`` in ``index`` at once (uint64)."""
    h = np.zeros(1, dtype=np.uint64)
    h = _absorb(_absorb(h, int(seed) & (2**64 - 1)), int(epoch) & (2**64 - 1))
    return _absorb(h, np.asarray(index, dtype=np.int64).astype(np.uint64)) >> np.uint64(1)


def uniforms(keys: np.ndarray, slot: int, n: int) -> np.ndarray:
    """[B, n] float64 uniforms in [0, 1): draws 0..n-1 of the SplitMix64 stream of (key, slot)."""
    stream = _absorb(keys, slot)
    counters = _GAMMA * np.arange(1, n + 1, dtype=np.uint64)  # wraps: SplitMix64's state sequence
    bits = _mix(stream[:, None] + counters[None, :])
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


# ---------------------------------------------------------------------------------------------
# Parameters (numpy, one row per sample)


@dataclass
class StrongParams:
    top: np.ndarray  # int64 [B]: the crop (RandomResizedCrop)
    left: np.ndarray
    height: np.ndarray
    width: np.ndarray
    flip: np.ndarray  # bool [B]
    jitter: np.ndarray  # bool [B]: ColorJitter applied (p = JITTER_P)
    factors: np.ndarray  # float64 [B, 4]: brightness, contrast, saturation, hue
    order: np.ndarray  # int64 [B, 4]: ColorJitter's random order (0..3 as in torchvision)
    gray: np.ndarray  # bool [B]
    solarize: np.ndarray  # bool [B]


@dataclass
class WeakParams:
    top: np.ndarray  # int64 [B]: offset of the crop in the padded image, 0..2*pad
    left: np.ndarray
    flip: np.ndarray  # bool [B]


_TRIES = 10  # torchvision's RandomResizedCrop tries ten crops before falling back


def resized_crop_params(u: np.ndarray, size: int, scale: tuple[float, float] = CROP_SCALE,
                        ratio: tuple[float, float] = CROP_RATIO) -> tuple[np.ndarray, ...]:
    """RandomResizedCrop.make_params on a square ``size`` image for every row of ``u`` [B, 22].

    The first of ten (area, log-ratio) tries whose rounded crop fits; else torchvision's fallback.
    """
    area = float(size * size)
    target = area * (scale[0] + (scale[1] - scale[0]) * u[:, :_TRIES])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = np.exp(log_lo + (log_hi - log_lo) * u[:, _TRIES:2 * _TRIES])
    w = np.round(np.sqrt(target * aspect)).astype(np.int64)  # round half to even, as Python's round
    h = np.round(np.sqrt(target / aspect)).astype(np.int64)
    fits = (w > 0) & (w <= size) & (h > 0) & (h <= size)
    first, found = fits.argmax(axis=1), fits.any(axis=1)
    rows = np.arange(len(u))
    if ratio[0] > 1:  # fallback of a square image (in_ratio 1) outside the ratio range
        fb_w, fb_h = size, int(round(size / ratio[0]))
    elif ratio[1] < 1:
        fb_w, fb_h = int(round(size * ratio[1])), size
    else:
        fb_w = fb_h = size
    w = np.where(found, w[rows, first], fb_w)
    h = np.where(found, h[rows, first], fb_h)
    top = np.where(found, np.floor(u[:, 2 * _TRIES] * (size - h + 1)), (size - h) // 2).astype(np.int64)
    left = np.where(found, np.floor(u[:, 2 * _TRIES + 1] * (size - w + 1)), (size - w) // 2).astype(np.int64)
    return top, left, h, w


def strong_params(keys: np.ndarray, slot: int, size: int) -> StrongParams:
    """The strong view's parameters for samples with these keys (``sample_keys``) in view ``slot``."""
    u = uniforms(keys, slot, 2 * _TRIES + 14)  # crop (22), flip, jitter, 4 factors, 4 order, gray, solarize
    top, left, h, w = resized_crop_params(u, size)
    v = u[:, 2 * _TRIES + 2:]
    b, c, s, hue = JITTER
    lo = np.array([1 - b, 1 - c, 1 - s, -hue])
    hi = np.array([1 + b, 1 + c, 1 + s, hue])
    return StrongParams(
        top=top, left=left, height=h, width=w,
        flip=v[:, 0] < 0.5,
        jitter=v[:, 1] < JITTER_P,
        factors=lo + (hi - lo) * v[:, 2:6],
        order=np.argsort(v[:, 6:10], axis=1, kind="stable"),  # a uniform random permutation
        gray=v[:, 10] < GRAYSCALE_P,
        solarize=v[:, 11] < SOLARIZE_P,
    )


def weak_params(keys: np.ndarray, slot: int, size: int) -> WeakParams:
    """The weak view's parameters: RandomCrop(size, padding=size // 8) offsets and the flip."""
    u = uniforms(keys, slot, 3)
    positions = 2 * (size // 8) + 1
    return WeakParams(top=np.floor(u[:, 0] * positions).astype(np.int64),
                      left=np.floor(u[:, 1] * positions).astype(np.int64), flip=u[:, 2] < 0.5)


# ---------------------------------------------------------------------------------------------
# Batched operations on float images holding uint8 values [n, 3, S, S]


def _on(device: torch.device, a: np.ndarray, dtype: torch.dtype = torch.long) -> Tensor:
    return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype).to(device, non_blocking=True)


def _flip_columns(cols: np.ndarray, flip: np.ndarray) -> np.ndarray:
    return np.where(flip[:, None], cols[:, ::-1], cols)


def _bilinear_taps(start: np.ndarray, length: np.ndarray, size: int) -> tuple[np.ndarray, ...]:
    """Source rows (or columns) and weights of resizing [start, start+length) to ``size`` pixels.

    torch's bilinear rule for upsampling (antialias changes nothing there): half-pixel centres,
    sources clamped to the crop.
    """
    src = np.maximum((np.arange(size)[None, :] + 0.5) * (length[:, None] / size) - 0.5, 0.0)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, length[:, None] - 1)
    return start[:, None] + i0, start[:, None] + i1, src - i0


def _select_rows(x: Tensor, rows: np.ndarray) -> Tensor:
    """``out[b, c, y] = x[b, c, rows[b, y]]`` (whole rows: an index_select, much faster than gather)."""
    b, c, h, w = x.shape
    flat = (np.arange(b * c).reshape(b, c, 1) * h + rows[:, None, :]).reshape(-1)
    return x.reshape(b * c * h, w).index_select(0, _on(x.device, flat)).view(b, c, rows.shape[1], w)


def _select_columns(x: Tensor, cols: np.ndarray) -> Tensor:
    """``out[b, c, y, k] = x[b, c, y, cols[b, k]]``."""
    b, c, h, _ = x.shape
    return x.gather(3, _on(x.device, cols).view(b, 1, 1, -1).expand(b, c, h, cols.shape[1]))


def _lerp(a: Tensor, b: Tensor, frac: np.ndarray, shape: tuple[int, ...]) -> Tensor:
    return a.add_((b - a).mul_(_on(a.device, frac, a.dtype).view(shape)))


def resized_crop(x: Tensor, p: StrongParams, size: int) -> Tensor:
    """Crop (top, left, height, width) of each image, resized to ``size`` (bilinear), then flipped."""
    if x.shape[-1] != size or x.shape[-2] != size:
        raise DataError(f"batched views expect images stored at data.image_size={size}, got "
                        f"{tuple(x.shape[-2:])}")
    r0, r1, rw = _bilinear_taps(p.top, p.height, size)
    c0, c1, cw = _bilinear_taps(p.left, p.width, size)
    # torch's uint8 resize: a horizontal pass rounded to uint8, then a vertical one; flip afterwards
    c0, c1, cw = (_flip_columns(a, p.flip) for a in (c0, c1, cw))
    x = _lerp(_select_columns(x, c0), _select_columns(x, c1), cw, (len(cw), 1, 1, size)).add_(0.5).floor_()
    return _lerp(_select_rows(x, r0), _select_rows(x, r1), rw, (len(rw), 1, size, 1)).add_(0.5).floor_()


def pad_crop_flip(x: Tensor, p: WeakParams, size: int) -> Tensor:
    """RandomCrop(size, padding=size // 8) (zero fill) then the horizontal flip."""
    pad = size // 8
    x = F.pad(x, (pad, pad, pad, pad))
    rows = p.top[:, None] + np.arange(size)[None, :]
    cols = _flip_columns(p.left[:, None] + np.arange(size)[None, :], p.flip)
    return _select_columns(_select_rows(x, rows), cols)


def _luma(x: Tensor) -> Tensor:
    # torchvision's rgb_to_grayscale weights, in the same order of operations
    return x[:, 0:1].mul(0.2989).add_(x[:, 1:2], alpha=0.587).add_(x[:, 2:3], alpha=0.114)


def _blend(x: Tensor, other: Tensor, f: Tensor) -> Tensor:
    # torchvision's _blend on uint8: clamp, then truncate to an integer
    return x.mul(f).add_(other * (1.0 - f)).clamp_(0, 255).floor_()


def brightness(x: Tensor, f: Tensor) -> Tensor:
    return x.mul(f).clamp_(0, 255).floor_()


def contrast(x: Tensor, f: Tensor) -> Tensor:
    return _blend(x, _luma(x).floor_().mean(dim=(1, 2, 3), keepdim=True), f)


def saturation(x: Tensor, f: Tensor) -> Tensor:
    return _blend(x, _luma(x).floor_(), f)


def hue(x: Tensor, f: Tensor) -> Tensor:
    """torchvision's adjust_hue: RGB -> HSV (Pillow's formulas), shift h, back, truncate to uint8.

    Fewer passes than torchvision, the same values up to float rounding: HSV -> RGB in the closed
    form ``v - v s clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + 6h) mod 6`` (n = 5, 3, 1 for r, g,
    b), where ``v s = max - min``; h is scale-free, so the 0..255 values need no division by 255.
    """
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    span = maxc - minc
    r_max, g_max = maxc == r, maxc == g
    # Pillow's hue sextant: (g - b) / span if r is the max, else 2 + (b - r) / span if g is, else 4 + (r - g) / span
    num = torch.where(r_max, g - b, torch.where(g_max, b - r, r - g))
    offset = torch.where(r_max, 0.0, torch.where(g_max, 2.0, 4.0))
    h = num.div_(torch.where(span == 0, 1.0, span)).add_(offset)
    # h / 6 + 1 modulo 1, plus the shift, modulo 1, times 6; modulo as y - floor(y) (y > 0 here:
    # the same values, and fmod is an order of magnitude slower on CPU)
    h = h.mul_(1.0 / 6.0).add_(1.0)
    h = h.sub_(h.floor()).add_(f.view(-1, 1, 1))
    h6 = h.sub_(h.floor()).mul_(6.0)
    k = h6.unsqueeze(1) + x.new_tensor([5.0, 3.0, 1.0]).view(1, 3, 1, 1)
    k = k.sub_(k.mul(1.0 / 6.0).floor_().mul_(6.0))
    t = k.sub_(2.0).abs_().neg_().add_(2.0).clamp_(0.0, 1.0)  # min(k, 4 - k) = 2 - |k - 2|: minimum is slow
    out = maxc.unsqueeze(1) - span.unsqueeze(1) * t
    return out.mul_((255.0 + 1.0 - 1e-3) / 255.0).floor_()  # torchvision's float -> uint8 conversion


_JITTER_OPS = (brightness, contrast, saturation, hue)


def color_jitter(x: Tensor, p: StrongParams) -> Tensor:
    """ColorJitter with each sample's factors and order, on the samples where it applies."""
    for position in range(4):
        for op_id, op in enumerate(_JITTER_OPS):
            chosen = p.jitter & (p.order[:, position] == op_id)
            f = _on(x.device, p.factors[chosen, op_id], x.dtype).view(-1, 1, 1, 1)
            x = _on_samples(x, chosen, lambda sub, f=f, op=op: op(sub, f))
    return x


def _on_samples(x: Tensor, mask: np.ndarray, op: Callable[[Tensor], Tensor]) -> Tensor:
    """``op`` applied, in place, to the samples where ``mask`` holds (only those are computed)."""
    chosen = np.flatnonzero(mask)
    if len(chosen):
        idx = _on(x.device, chosen)
        x.index_copy_(0, idx, op(x.index_select(0, idx)))
    return x


def _grayscale(x: Tensor) -> Tensor:
    return _luma(x).floor_().expand_as(x)  # rgb_to_grayscale(3 channels) on uint8: truncated


def _solarize(x: Tensor) -> Tensor:
    return torch.where(x >= SOLARIZE_THRESHOLD, 255.0 - x, x)


def strong_view(x: Tensor, p: StrongParams, size: int) -> Tensor:
    """RandomResizedCrop, flip, ColorJitter (p 0.8, random order), grayscale (0.2), solarize (0.5)."""
    x = color_jitter(resized_crop(x, p, size), p)
    return _on_samples(_on_samples(x, p.gray, _grayscale), p.solarize, _solarize)


# ---------------------------------------------------------------------------------------------
# The views' batched forms (``View.batched``) and the hook the trainer calls

BatchedOp = Callable[[Tensor, np.ndarray, int], Tensor]  # (x, keys, slot) -> view, uint8 values


def batched_weak(ctx: ViewContext) -> BatchedOp:
    return lambda x, keys, slot: pad_crop_flip(x, weak_params(keys, slot, ctx.image_size), ctx.image_size)


def batched_strong(ctx: ViewContext) -> BatchedOp:
    return lambda x, keys, slot: strong_view(x, strong_params(keys, slot, ctx.image_size), ctx.image_size)


def batched_test(ctx: ViewContext) -> BatchedOp:
    return lambda x, keys, slot: x


class BatchedViews:
    """``views(images, index, epoch)``: uint8 [B, 3, S, S] -> the method's views, float32 normalised.

    One view gives a Tensor [B, 3, S, S], several a list in ``views`` order, as the collated
    per-sample path does. The view in position k draws from stream k of each sample's key. ``options``:
    the dataset's view options (``ViewContext.options``).
    """

    def __init__(self, views: Sequence[str], image_size: int, mean: Sequence[float], std: Sequence[float],
                 seed: int, options: Mapping[str, Any] | None = None) -> None:
        views = tuple(views)
        if not views:
            raise DataError("batched views: give one or more views")
        self.views, self.image_size, self.seed = views, int(image_size), int(seed)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        ctx = ViewContext(self.image_size, self.mean, self.std, dict(options or {}))
        self._ops = []
        for name in views:
            view = VIEWS.get_checked(name)
            if view.batched is None:
                raise DataError(f"view {name!r} has no batched form for data.augment_on=device; set "
                                "data.augment_on=workers")
            self._ops.append(view.batched(ctx))

    def __call__(self, images: Tensor, index: Tensor, epoch: int) -> Tensor | list[Tensor]:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise DataError(f"batched views need the decoded uint8 batch [B, 3, S, S], got {images.dtype} "
                            f"{tuple(images.shape)} (data.augment_on=device with a dataset that already "
                            "applies a transform)")
        keys = sample_keys(self.seed, epoch, index.detach().cpu().numpy())
        x = images.float()
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        # each op leaves x as it is (the views of a sample all start from its image)
        out = [op(x, keys, slot).mul(1.0 / 255.0).sub_(mean).div_(std)  # ToDtype(scale=True) + Normalize
               for slot, op in enumerate(self._ops)]
        return out[0] if len(out) == 1 else out

    def __repr__(self) -> str:
        return f"BatchedViews({self.views!r}, image_size={self.image_size}, seed={self.seed})"
