"""ProMix's strong view: RandAugment (3 of 14 operations, uniform magnitudes) + Cutout, then the weak view.

The reference (Justherozen/ProMix, ``RandomAugment(3, 5)`` inserted before its weak pipeline) draws 3
operations with replacement from the 14 below, each with a magnitude uniform over its range (the ``5``
is unused), applies them with PIL, then a Cutout whose side is U(0, 0.5) of the image width, filled with
(125, 123, 114); then flip + crop (pad 4; CIFAR-100: crop then flip), then normalisation. The
operations' parameterisation follows the RandomAugment module of the authors' group (hbzju/PiCO,
utils/randaugment.py: the same class, op table and ranges as promix.md lists; ProMix's own
utils/randaug.py was not available to read), including its Cutout centre
``np.random.uniform(w)`` = uniform on (1, w], not (0, w).

Two paths, the same distribution:

* per sample (``make_randaugment_transform``): a torchvision v2 transform on uint8 [3, S, S] that runs the
  reference's PIL operations themselves; its draws come from torch's global generator, which
  ``IndexedDataset`` seeds per (seed, epoch, index);
* batched, on the device (``BatchedRandAugment``): every operation rewritten for float tensors holding
  uint8 values, all samples at once, following PIL's integer and float32 arithmetic (LUTs, blends, the
  3x3 smoothing filter with its rounding, affine nearest-neighbour sampling in 16.16 fixed point,
  translations through PIL's scale path, Cutout's truncated inclusive rectangle), so an operation gives
  PIL's pixels at the same parameter (``tests/test_promix_views.py``). Its draws are a pure function of
  (seed, epoch, index, view slot), as ``batched_views``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from PIL import ImageDraw, ImageEnhance, ImageOps
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from tcl_lite.data.entries import ViewContext
from tcl_lite.errors import DataError

from .batched_views import WeakParams, pad_crop_flip, sample_keys, uniforms

# (name, low, high): the magnitude is low + (high - low) * U(0, 1)
OPS: tuple[tuple[str, float, float], ...] = (
    ("autocontrast", 0, 1), ("brightness", 0.05, 0.95), ("color", 0.05, 0.95), ("contrast", 0.05, 0.95),
    ("equalize", 0, 1), ("identity", 0, 1), ("posterize", 4, 8), ("rotate", -30, 30), ("sharpness", 0.05, 0.95),
    ("shear_x", -0.3, 0.3), ("shear_y", -0.3, 0.3), ("solarize", 0, 256), ("translate_x", -0.3, 0.3),
    ("translate_y", -0.3, 0.3),
)
OP_NAMES = tuple(name for name, _, _ in OPS)
NUM_OPS = 3  # operations per image
CUTOUT_MAX = 0.5  # Cutout side: U(0, CUTOUT_MAX) of the image width
CUTOUT_FILL = (125, 123, 114)


def magnitudes(ops: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Each op's magnitude from a uniform: ``low + (high - low) * u`` (float64)."""
    lo = np.array([o[1] for o in OPS], dtype=np.float64)[ops]
    hi = np.array([o[2] for o in OPS], dtype=np.float64)[ops]
    return lo + (hi - lo) * u


# ---------------------------------------------------------------------------------------------
# The reference's operations on PIL images (the per-sample path)


def _pil_affine(img: PIL.Image.Image, coeffs: tuple[float, ...]) -> PIL.Image.Image:
    return img.transform(img.size, PIL.Image.Transform.AFFINE, coeffs)


PIL_OPS: dict[str, Callable[[PIL.Image.Image, float], PIL.Image.Image]] = {
    "autocontrast": lambda img, v: ImageOps.autocontrast(img),
    "brightness": lambda img, v: ImageEnhance.Brightness(img).enhance(v),
    "color": lambda img, v: ImageEnhance.Color(img).enhance(v),
    "contrast": lambda img, v: ImageEnhance.Contrast(img).enhance(v),
    "equalize": lambda img, v: ImageOps.equalize(img),
    "identity": lambda img, v: img,
    "posterize": lambda img, v: ImageOps.posterize(img, max(1, int(v))),
    "rotate": lambda img, v: img.rotate(v),
    "sharpness": lambda img, v: ImageEnhance.Sharpness(img).enhance(v),
    "shear_x": lambda img, v: _pil_affine(img, (1, v, 0, 0, 1, 0)),
    "shear_y": lambda img, v: _pil_affine(img, (1, 0, 0, v, 1, 0)),
    "solarize": lambda img, v: ImageOps.solarize(img, v),
    "translate_x": lambda img, v: _pil_affine(img, (1, 0, v * img.size[0], 0, 1, 0)),
    "translate_y": lambda img, v: _pil_affine(img, (1, 0, 0, 0, 1, v * img.size[1])),
}


def cutout_box(size: float, ux: float, uy: float, width: int, height: int) -> tuple[int, int, float, float] | None:
    """The reference's Cutout rectangle (x0, y0, x1, y1) for side fraction ``size`` and centre uniforms,
    or None when ``size <= 0``: centre ``w + (1 - w) ux`` (numpy's ``uniform(w)``), corner truncated."""
    if size <= 0:
        return None
    side = size * width
    x0 = int(max(0.0, width + (1.0 - width) * ux - side / 2.0))
    y0 = int(max(0.0, height + (1.0 - height) * uy - side / 2.0))
    return x0, y0, min(width, x0 + side), min(height, y0 + side)


def pil_cutout(img: PIL.Image.Image, size: float, ux: float, uy: float) -> PIL.Image.Image:
    """Cutout as the reference draws it: PIL's filled rectangle (corners truncated, both inclusive)."""
    box = cutout_box(size, ux, uy, *img.size)
    if box is None:
        return img
    img = img.copy()
    ImageDraw.Draw(img).rectangle(box, CUTOUT_FILL)
    return img


class RandAugment(v2.Transform):
    """The reference's ``RandomAugment(3, 5)`` + Cutout on a uint8 [3, S, S] tensor, with PIL's operations.

    Draws (torch's global generator): 3 op indices uniform over the 14, a uniform per magnitude, and
    the Cutout's side and centre uniforms.
    """

    def make_params(self, flat_inputs: list) -> dict:
        return {"ops": torch.randint(0, len(OPS), (NUM_OPS,)).tolist(),
                "u": torch.rand(NUM_OPS, dtype=torch.float64).tolist(),
                "cutout": torch.rand(3, dtype=torch.float64).tolist()}

    def transform(self, inpt: Tensor, params: dict) -> Tensor:
        if not isinstance(inpt, Tensor) or inpt.dtype != torch.uint8 or inpt.ndim != 3 or inpt.shape[0] != 3:
            raise DataError("RandAugment needs a decoded RGB uint8 image [3, S, S], got "
                            f"{getattr(inpt, 'dtype', type(inpt))} {tuple(getattr(inpt, 'shape', ()))}")
        img = TF.to_pil_image(inpt)
        values = magnitudes(np.array(params["ops"]), np.array(params["u"]))
        for op, v in zip(params["ops"], values):
            img = PIL_OPS[OP_NAMES[op]](img, float(v))
        size, ux, uy = params["cutout"]
        return TF.pil_to_tensor(pil_cutout(img, CUTOUT_MAX * size, ux, uy))


def make_randaugment_transform(image_size: int, mean: Sequence[float], std: Sequence[float],
                               crop_then_flip: bool) -> v2.Compose:
    """ProMix's strong view, per sample: uint8 [3, S, S] -> float32 [3, S, S] normalised.

    RandAugment + Cutout, then flip and crop (pad S/8, zero fill) in the reference's order: flip first
    (CIFAR-10) or ``crop_then_flip`` (CIFAR-100).
    """
    flip, crop = v2.RandomHorizontalFlip(), v2.RandomCrop(image_size, padding=image_size // 8)
    weak = [crop, flip] if crop_then_flip else [flip, crop]
    return v2.Compose([RandAugment(), *weak, v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean),
                                                                                                   list(std))])


# ---------------------------------------------------------------------------------------------
# Batched operations on float images holding uint8 values [n, 3, S, S]; parameters are numpy [n]


def _dev(x: Tensor, a: np.ndarray, dtype: torch.dtype) -> Tensor:
    return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype).to(x.device, non_blocking=True)


def _apply_lut(x: Tensor, lut: Tensor) -> Tensor:
    """``out[b, c, ...] = lut[b, c, x[b, c, ...]]`` with ``lut`` [n, 3, 256]."""
    n, c, h, w = x.shape
    return lut.to(x.dtype).gather(2, x.long().view(n, c, h * w)).view(n, c, h, w)


def _histograms(x: Tensor) -> Tensor:
    n, c, h, w = x.shape
    flat = x.long().view(n * c, h * w)
    hist = torch.zeros(n * c, 256, dtype=torch.long, device=x.device)
    return hist.scatter_add_(1, flat, torch.ones_like(flat)).view(n, c, 256)


def autocontrast(x: Tensor) -> Tensor:
    """ImageOps.autocontrast: per channel, ``int(i * scale - lo * scale)`` with scale 255 / (hi - lo),
    clipped to 0..255 (float64 as PIL's Python); unchanged where hi <= lo."""
    lo = x.amin(dim=(2, 3), keepdim=True).double()
    hi = x.amax(dim=(2, 3), keepdim=True).double()
    span = (hi - lo).clamp_min(1.0)
    scale = torch.full_like(span, 255.0) / span  # a true division (``255.0 / t`` multiplies by a reciprocal)
    levels = torch.arange(256, dtype=torch.float64, device=x.device).view(1, 1, 256)
    lut = (levels * scale.squeeze(3) + (-lo.squeeze(3) * scale.squeeze(3))).trunc().clamp(0, 255)
    lut = torch.where((hi > lo).squeeze(3), lut, levels.expand_as(lut))
    return _apply_lut(x, lut)


def equalize(x: Tensor) -> Tensor:
    """ImageOps.equalize: per channel ``step = (N - count of the top level) // 255`` and
    ``lut[i] = (step // 2 + #pixels below i) // step`` (clipped to 255); unchanged with one level or step 0."""
    hist = _histograms(x)
    levels = torch.arange(256, device=x.device).view(1, 1, 256)
    top = torch.where(hist > 0, levels, -1).amax(dim=2, keepdim=True)
    step = (hist.sum(dim=2, keepdim=True) - hist.gather(2, top)) // 255
    below = hist.cumsum(dim=2) - hist
    lut = ((step // 2 + below) // step.clamp_min(1)).clamp_max(255)
    keep = ((hist > 0).sum(dim=2, keepdim=True) <= 1) | (step == 0)
    return _apply_lut(x, torch.where(keep, levels.expand_as(lut), lut))


def _blend(degenerate: Tensor, x: Tensor, factor: np.ndarray) -> Tensor:
    # PIL's ImagingBlend for 0 <= alpha <= 1: (uint8)(in1 + alpha * (in2 - in1)) in float32
    f = _dev(x, factor, torch.float32).view(-1, 1, 1, 1)
    return (x - degenerate).mul_(f).add_(degenerate).floor_()


def _luma(x: Tensor) -> Tensor:
    # PIL's RGB -> L: (R * 19595 + G * 38470 + B * 7471 + 0x8000) >> 16, exact in float32 (< 2**24)
    return (x[:, 0:1] * 19595 + x[:, 1:2] * 38470 + x[:, 2:3] * 7471 + 32768).div_(65536).floor_()


def brightness(x: Tensor, factor: np.ndarray) -> Tensor:
    return _blend(torch.zeros_like(x), x, factor)


def color(x: Tensor, factor: np.ndarray) -> Tensor:
    return _blend(_luma(x).expand_as(x), x, factor)


def contrast(x: Tensor, factor: np.ndarray) -> Tensor:
    # ImageEnhance.Contrast: a flat image at int(mean(L) + 0.5)
    mean = _luma(x).double().mean(dim=(1, 2, 3), keepdim=True).add_(0.5).floor_().to(x.dtype)
    return _blend(mean.expand_as(x), x, factor)


_SMOOTH_SIDE = torch.tensor(1.0 / 13.0, dtype=torch.float32).item()  # ImageFilter.SMOOTH, as float32
_SMOOTH_CENTRE = torch.tensor(5.0 / 13.0, dtype=torch.float32).item()


def _smooth(x: Tensor) -> Tensor:
    """ImageFilter.SMOOTH as PIL's 3x3 filter: rows y+1, y, y-1 summed in float32 in that order,
    rounded; the border pixels are copied."""
    def row(r: Tensor, centre: float) -> Tensor:
        return (r[..., :-2] * _SMOOTH_SIDE + r[..., 1:-1] * centre) + r[..., 2:] * _SMOOTH_SIDE

    s = row(x[:, :, 2:], _SMOOTH_SIDE) + row(x[:, :, 1:-1], _SMOOTH_CENTRE)
    s = s + row(x[:, :, :-2], _SMOOTH_SIDE)
    out = x.clone()
    out[:, :, 1:-1, 1:-1] = s.add_(0.5).floor_().clamp_(0, 255)
    return out


def sharpness(x: Tensor, factor: np.ndarray) -> Tensor:
    return _blend(_smooth(x), x, factor)


def posterize(x: Tensor, bits: np.ndarray) -> Tensor:
    """ImageOps.posterize with ``max(1, int(v))`` bits: the low bits cleared."""
    step = _dev(x, 2.0 ** (8 - np.maximum(1, bits.astype(np.int64))), x.dtype).view(-1, 1, 1, 1)
    return x.div(step).floor_().mul_(step)


def solarize(x: Tensor, threshold: np.ndarray) -> Tensor:
    """ImageOps.solarize: levels ``i >= threshold`` inverted (threshold compared as a float)."""
    t = _dev(x, threshold, torch.float64).view(-1, 1, 1, 1)
    return torch.where(x.double() < t, x, 255.0 - x)


def _gather_pixels(x: Tensor, src_y: Tensor, src_x: Tensor) -> Tensor:
    """``out[b, :, i, j] = x[b, :, src_y, src_x]`` (int64 [n, S, S] maps), 0 outside the image."""
    n, c, h, w = x.shape
    inside = (src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h)
    flat = (src_y.clamp(0, h - 1) * w + src_x.clamp(0, w - 1)).view(n, 1, h * w).expand(n, c, h * w)
    out = x.reshape(n, c, h * w).gather(2, flat).view(n, c, h, w)
    return torch.where(inside.unsqueeze(1), out, torch.zeros_like(out))


def _fix(v: float) -> int:
    return math.floor(v * 65536.0 + 0.5)  # PIL's 16.16 fixed point


def affine_nearest(x: Tensor, coeffs: Sequence[tuple[float, ...]]) -> Tensor:
    """PIL's AFFINE transform, nearest neighbour, black fill, for a general matrix (PIL's fixed-point
    path): output (i, j) reads input ``(a (j + .5) + b (i + .5) + c, d (j + .5) + e (i + .5) + f)``,
    each coordinate in 16.16 fixed point and floored. ``coeffs``: one (a, b, c, d, e, f) per image."""
    n, _, h, w = x.shape
    fixed = np.array([[_fix(a), _fix(b), _fix(c + a * 0.5 + b * 0.5), _fix(d), _fix(e), _fix(f + d * 0.5 + e * 0.5)]
                      for a, b, c, d, e, f in coeffs], dtype=np.int64).reshape(n, 6, 1, 1)
    k = _dev(x, fixed, torch.long)
    i = torch.arange(h, device=x.device).view(1, h, 1)
    j = torch.arange(w, device=x.device).view(1, 1, w)
    src_x = (k[:, 2] + i * k[:, 1] + j * k[:, 0]) >> 16
    src_y = (k[:, 5] + i * k[:, 4] + j * k[:, 3]) >> 16
    return _gather_pixels(x, src_y, src_x)


def rotate_coeffs(degrees: float, width: int, height: int) -> tuple[float, ...]:
    """``PIL.Image.rotate``'s inverse matrix about the centre (w / 2, h / 2), no expansion (the angle
    taken modulo 360 first, as PIL)."""
    angle = -math.radians(degrees % 360.0)
    a, b = round(math.cos(angle), 15), round(math.sin(angle), 15)
    d, e = round(-math.sin(angle), 15), round(math.cos(angle), 15)
    cx, cy = width / 2, height / 2
    return a, b, a * -cx + b * -cy + cx, d, e, d * -cx + e * -cy + cy


def rotate(x: Tensor, degrees: np.ndarray) -> Tensor:
    return affine_nearest(x, [rotate_coeffs(float(v), x.shape[3], x.shape[2]) for v in degrees])


def shear_x(x: Tensor, v: np.ndarray) -> Tensor:
    return affine_nearest(x, [(1.0, float(s), 0.0, 0.0, 1.0, 0.0) for s in v])


def shear_y(x: Tensor, v: np.ndarray) -> Tensor:
    return affine_nearest(x, [(1.0, 0.0, 0.0, float(s), 1.0, 0.0) for s in v])


def _translate(x: Tensor, shift: np.ndarray, axis: int) -> Tensor:
    # PIL's scale path for translation matrices: source = floor(t + 0.5 + i) in float64
    n, _, h, w = x.shape
    length = w if axis == 1 else h
    src = _dev(x, np.floor(shift[:, None] + 0.5 + np.arange(length)[None, :]), torch.long)
    rows = torch.arange(h, device=x.device).view(1, h, 1).expand(n, h, w)
    cols = torch.arange(w, device=x.device).view(1, 1, w).expand(n, h, w)
    if axis == 1:
        return _gather_pixels(x, rows, src.view(n, 1, w).expand(n, h, w))
    return _gather_pixels(x, src.view(n, h, 1).expand(n, h, w), cols)


def translate_x(x: Tensor, v: np.ndarray) -> Tensor:
    return _translate(x, v * x.shape[3], axis=1)


def translate_y(x: Tensor, v: np.ndarray) -> Tensor:
    return _translate(x, v * x.shape[2], axis=0)


def cutout(x: Tensor, size: np.ndarray, ux: np.ndarray, uy: np.ndarray) -> Tensor:
    """The reference's Cutout (``cutout_box``) with side fraction ``size``: rows y0..int(y1) and columns
    x0..int(x1), both inclusive, clipped to the image, filled with ``CUTOUT_FILL``."""
    n, _, h, w = x.shape
    boxes = [cutout_box(float(s), float(a), float(b), w, h) for s, a, b in zip(size, ux, uy)]
    # an empty range (lo > hi) for no box
    bounds = np.array([(b[0], int(b[2]), b[1], int(b[3])) if b else (1, 0, 1, 0) for b in boxes], dtype=np.int64)
    t = _dev(x, bounds, torch.long)
    i = torch.arange(h, device=x.device).view(1, h, 1)
    j = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((j >= t[:, 0, None, None]) & (j <= t[:, 1, None, None]) & (i >= t[:, 2, None, None])
              & (i <= t[:, 3, None, None]))
    fill = torch.tensor(CUTOUT_FILL, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return torch.where(inside.unsqueeze(1), fill, x)


BATCHED_OPS: dict[str, Callable[[Tensor, np.ndarray], Tensor]] = {
    "autocontrast": lambda x, v: autocontrast(x), "brightness": brightness, "color": color, "contrast": contrast,
    "equalize": lambda x, v: equalize(x), "identity": lambda x, v: x, "posterize": posterize, "rotate": rotate,
    "sharpness": sharpness, "shear_x": shear_x, "shear_y": shear_y, "solarize": solarize,
    "translate_x": translate_x, "translate_y": translate_y,
}


# ---------------------------------------------------------------------------------------------
# Parameters and the batched view


@dataclass
class RandAugmentParams:
    ops: np.ndarray  # int64 [B, NUM_OPS]: indices into OPS
    values: np.ndarray  # float64 [B, NUM_OPS]: each op's magnitude
    cutout_size: np.ndarray  # float64 [B]: the side as a fraction of the width, U(0, CUTOUT_MAX)
    cutout_x: np.ndarray  # float64 [B]: the centre's uniforms
    cutout_y: np.ndarray
    weak: WeakParams  # flip and crop offsets, in the order of the per-sample pipeline


def randaugment_params(keys: np.ndarray, slot: int, size: int) -> RandAugmentParams:
    """The strong view's parameters for samples with these keys (``sample_keys``) in view ``slot``."""
    u = uniforms(keys, slot, 2 * NUM_OPS + 6)
    ops = np.minimum(np.floor(u[:, :NUM_OPS] * len(OPS)), len(OPS) - 1).astype(np.int64)
    pad = size // 8
    top = np.floor(u[:, -3] * (2 * pad + 1)).astype(np.int64)
    left = np.floor(u[:, -2] * (2 * pad + 1)).astype(np.int64)
    flip = u[:, -1] < 0.5
    return RandAugmentParams(ops=ops, values=magnitudes(ops, u[:, NUM_OPS:2 * NUM_OPS]),
                             cutout_size=CUTOUT_MAX * u[:, 2 * NUM_OPS], cutout_x=u[:, 2 * NUM_OPS + 1],
                             cutout_y=u[:, 2 * NUM_OPS + 2], weak=WeakParams(top=top, left=left, flip=flip))


def _on_samples(x: Tensor, mask: np.ndarray, op: Callable[[Tensor], Tensor]) -> Tensor:
    """``op`` applied to the samples where ``mask`` holds (only those are computed)."""
    chosen = np.flatnonzero(mask)
    if len(chosen):
        idx = _dev(x, chosen, torch.long)
        x = x.index_copy(0, idx, op(x.index_select(0, idx)))
    return x


def randaugment_view(x: Tensor, p: RandAugmentParams, size: int, crop_then_flip: bool) -> Tensor:
    """RandAugment + Cutout, then flip and crop in the per-sample pipeline's order, on a float batch of
    uint8 values [B, 3, S, S]; each sample with its own parameters."""
    for position in range(NUM_OPS):
        for op_id, name in enumerate(OP_NAMES):
            chosen = p.ops[:, position] == op_id
            if name != "identity":
                values = p.values[chosen, position]
                x = _on_samples(x, chosen, lambda sub, v=values, f=BATCHED_OPS[name]: f(sub, v))
    x = cutout(x, p.cutout_size, p.cutout_x, p.cutout_y)
    weak = p.weak
    if not crop_then_flip:  # flip then crop at `left` = crop at 2 pad - left then flip
        weak = WeakParams(top=weak.top, left=np.where(weak.flip, 2 * (size // 8) - weak.left, weak.left),
                          flip=weak.flip)
    return pad_crop_flip(x, weak, size)


class BatchedRandAugment:
    """``view(images, index, epoch)``: uint8 [B, 3, S, S] -> ProMix's strong view, float32 normalised,
    made on the images' device; the parameters of sample i are a pure function of (seed, epoch, i, slot)
    (``slot``: the view's position among the method's views, its stream of the sample's key)."""

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float], seed: int,
                 crop_then_flip: bool, slot: int = 1) -> None:
        self.image_size, self.seed, self.slot = int(image_size), int(seed), int(slot)
        self.crop_then_flip = bool(crop_then_flip)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def __call__(self, images: Tensor, index: Tensor, epoch: int) -> Tensor:
        s = self.image_size
        if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != (3, s, s):
            raise DataError(f"the RandAugment view needs decoded RGB uint8 images [B, 3, {s}, {s}] "
                            f"(data.image_size={s}), got {images.dtype} {tuple(images.shape)}")
        keys = sample_keys(self.seed, epoch, index.detach().cpu().numpy())
        params = randaugment_params(keys, self.slot, s)
        view = randaugment_view(images.float(), params, s, self.crop_then_flip)
        mean = torch.tensor(self.mean, device=view.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=view.device).view(1, -1, 1, 1)
        return view.mul_(1.0 / 255.0).sub_(mean).div_(std)  # ToDtype(scale=True) + Normalize

    def __repr__(self) -> str:
        return (f"BatchedRandAugment(image_size={self.image_size}, seed={self.seed}, slot={self.slot}, "
                f"crop_then_flip={self.crop_then_flip})")


# ---------------------------------------------------------------------------------------------
# The view entry's two forms (``data.catalog`` registers them as ``randaugment``)


def per_sample_randaugment(ctx: ViewContext) -> v2.Compose:
    """``make_randaugment_transform`` with the dataset's ``crop_then_flip`` view option (default: flip first)."""
    return make_randaugment_transform(ctx.image_size, ctx.mean, ctx.std, bool(ctx.options.get("crop_then_flip")))


def batched_randaugment(ctx: ViewContext) -> Callable[[Tensor, np.ndarray, int], Tensor]:
    """``randaugment_view`` of a float batch of uint8 values, drawn from stream ``slot`` of the samples' keys."""
    size, crop_then_flip = ctx.image_size, bool(ctx.options.get("crop_then_flip"))
    return lambda x, keys, slot: randaugment_view(x, randaugment_params(keys, slot, size), size, crop_then_flip)
