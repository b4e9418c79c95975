"""ProMix's strong view (RandAugment + Cutout, then flip and crop): the batched device path against the
per-sample path, which runs the reference's PIL operations (promix.md, Data)."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from tcl_lite.data.batched_views import sample_keys
from tcl_lite.data.randaugment import (
    BATCHED_OPS,
    CUTOUT_FILL,
    CUTOUT_MAX,
    OP_NAMES,
    OPS,
    PIL_OPS,
    BatchedRandAugment,
    RandAugment,
    cutout,
    cutout_box,
    make_randaugment_transform,
    pil_cutout,
    randaugment_params,
    randaugment_view,
)
from tcl_lite.errors import DataError

S = 32
DRAWS = 10_000
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])  # the batched path runs on the GPU too
MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)


def _images(n: int, seed: int = 0) -> torch.Tensor:
    """Photo-like uint8 images (random 8x8 colours upsampled) with a flat patch in some, plus (from 8
    images on) edge cases for the histogram operations: a constant image, two levels (0 x 1000,
    255 x 24), the full range."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, 8, 8, generator=g) * 255
    x = torch.nn.functional.interpolate(small, size=S, mode="bilinear").round().to(torch.uint8)
    x[: n // 4, :, :10, :10] = 100
    if n < 8:
        return x
    x[-1] = 77
    x[-2] = 0
    x[-2].view(3, -1)[:, :24] = 255
    x[-3] = torch.arange(S * S, dtype=torch.int64).remainder(256).view(1, S, S).to(torch.uint8)
    return x


def _pil(image: torch.Tensor) -> PIL.Image.Image:
    return TF.to_pil_image(image.to(torch.uint8))


def _tensor(img: PIL.Image.Image) -> torch.Tensor:
    return TF.pil_to_tensor(img).float()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", OP_NAMES)
def test_each_batched_op_is_pils_at_the_same_parameter(name: str, device: str) -> None:
    """Every operation on 48 images at magnitudes across its range (both ends included): the same
    pixels as the reference's PIL operation."""
    images = _images(48)
    lo, hi = OPS[OP_NAMES.index(name)][1:]
    v = lo + (hi - lo) * np.linspace(0.0, 1.0 - 1e-9, 48)
    if name == "solarize":
        v[:3] = (0.0, 128.0, 255.5)  # all inverted, an integer threshold, none inverted
    ours = BATCHED_OPS[name](images.float().to(device), v).cpu()
    ref = torch.stack([_tensor(PIL_OPS[name](_pil(images[b]), float(v[b]))) for b in range(48)])
    assert torch.equal(ours, ref), (ours - ref).abs().max()


def test_cutout_is_pils_rectangle() -> None:
    """Side U(0, 0.5) * 32, centre uniform on (1, 32] (numpy's ``uniform(w)``), truncated corners,
    inclusive edges, fill (125, 123, 114); a zero side draws nothing."""
    images = _images(64)
    rng = np.random.default_rng(0)
    size, ux, uy = rng.random(64) * CUTOUT_MAX, rng.random(64), rng.random(64)
    size[:2], ux[2:4], uy[4:6] = 0.0, (0.0, 1 - 1e-12), (0.0, 1 - 1e-12)
    ours = cutout(images.float().to(DEVICES[-1]), size, ux, uy).cpu()
    ref = torch.stack([_tensor(pil_cutout(_pil(images[b]), size[b], ux[b], uy[b])) for b in range(64)])
    assert torch.equal(ours, ref)
    assert torch.equal(ours[:2], images[:2].float())
    assert cutout_box(0.25, 0.0, 1.0, S, S) == (28, 0, 32, 8.0)  # centre (32, 1): clipped at the edges


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("crop_then_flip", [False, True])
def test_whole_view_is_the_per_sample_pipeline_given_the_same_parameters(crop_then_flip: bool, device: str) -> None:
    """Three operations, Cutout, then flip and crop (pad 4, zero fill) in the chosen order: the batched
    view equals the reference's PIL operations and torchvision's flip/crop with the same parameters."""
    images = _images(64)
    p = randaugment_params(sample_keys(3, 2, np.arange(64)), 1, S)
    ours = randaugment_view(images.float().to(device), p, S, crop_then_flip).cpu()
    ref = []
    for b in range(64):
        img = _pil(images[b])
        for k in range(3):
            img = PIL_OPS[OP_NAMES[p.ops[b, k]]](img, float(p.values[b, k]))
        y = TF.pil_to_tensor(pil_cutout(img, p.cutout_size[b], p.cutout_x[b], p.cutout_y[b]))
        top, left = int(p.weak.top[b]), int(p.weak.left[b])
        if crop_then_flip:
            y = TF.crop(TF.pad(y, [4]), top, left, S, S)
            y = TF.horizontal_flip(y) if p.weak.flip[b] else y
        else:
            y = TF.horizontal_flip(y) if p.weak.flip[b] else y
            y = TF.crop(TF.pad(y, [4]), top, left, S, S)
        ref.append(y.float())
    assert torch.equal(ours, torch.stack(ref))


# ---------------------------------------------------------------------------------------------
# Distributions: the batched draws (counter-based) against the per-sample transform's (torch's generator)


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov distance (largest gap between the empirical CDFs)."""
    grid = np.union1d(a, b)
    cdf = [np.searchsorted(np.sort(x), grid, side="right") / len(x) for x in (a, b)]
    return float(np.abs(cdf[0] - cdf[1]).max())


@pytest.fixture(scope="module")
def draws() -> tuple[object, dict[str, np.ndarray]]:
    batched = randaugment_params(sample_keys(11, 4, np.arange(DRAWS)), 1, S)
    torch.manual_seed(0)
    made = [RandAugment().make_params([]) for _ in range(DRAWS)]
    per_sample = {"ops": np.array([m["ops"] for m in made]), "u": np.array([m["u"] for m in made]),
                  "cutout": np.array([m["cutout"] for m in made])}
    return batched, per_sample


def test_op_frequencies(draws) -> None:
    """Each of the 14 operations at each of the 3 positions: 1/14 +- 0.01 (about 4 sd at 10k), in both
    paths; positions independent (the same op twice: 1/14 of the time)."""
    batched, per_sample = draws
    for ops in (batched.ops, per_sample["ops"]):
        assert ops.shape == (DRAWS, 3) and ops.min() == 0 and ops.max() == 13
        freq = np.stack([(ops == k).mean(axis=0) for k in range(14)])
        assert np.all(np.abs(freq - 1 / 14) < 0.01), freq
        assert abs((ops[:, 0] == ops[:, 1]).mean() - 1 / 14) < 0.01


def test_magnitudes_are_uniform_over_each_ops_range(draws) -> None:
    """Normalised magnitudes (v - low) / (high - low): the same distribution in both paths (KS < 0.02
    over the 30k draws of each), uniform (quartiles within 0.01); each op within its range; Posterize's
    bits 4..7 equally often."""
    batched, per_sample = draws
    lo = np.array([o[1] for o in OPS])
    hi = np.array([o[2] for o in OPS])
    u_batched = ((batched.values - lo[batched.ops]) / (hi - lo)[batched.ops]).reshape(-1)
    u_per_sample = per_sample["u"].reshape(-1)
    assert _ks(u_batched, u_per_sample) < 0.02
    for u in (u_batched, u_per_sample):
        assert u.min() >= 0 and u.max() < 1
        assert np.all(np.abs(np.quantile(u, [0.25, 0.5, 0.75]) - [0.25, 0.5, 0.75]) < 0.01)
    for k, (name, low, high) in enumerate(OPS):
        v = batched.values[batched.ops == k]
        assert v.min() >= low and v.max() < high, name
    bits = batched.values[batched.ops == OP_NAMES.index("posterize")].astype(int)
    assert np.all(np.abs(np.bincount(bits, minlength=8)[4:] / len(bits) - 0.25) < 0.03)


def test_cutout_sizes_and_positions(draws) -> None:
    """The Cutout box's side and corner: the same distribution in both paths (KS < 0.03), the side
    fraction uniform on [0, 0.5)."""
    batched, per_sample = draws
    boxes_b = [cutout_box(s, x, y, S, S) for s, x, y in zip(batched.cutout_size, batched.cutout_x, batched.cutout_y)]
    boxes_p = [cutout_box(CUTOUT_MAX * s, x, y, S, S) for s, x, y in per_sample["cutout"]]
    for k, what in enumerate(("x0", "y0")):
        assert _ks(np.array([b[k] for b in boxes_b]), np.array([b[k] for b in boxes_p])) < 0.03, what
    width_b = np.array([int(b[2]) - b[0] + 1 for b in boxes_b])
    width_p = np.array([int(b[2]) - b[0] + 1 for b in boxes_p])
    assert _ks(width_b, width_p) < 0.03 and width_b.min() >= 1 and width_b.max() <= 17
    assert batched.cutout_size.min() >= 0 and batched.cutout_size.max() < CUTOUT_MAX
    assert abs(batched.cutout_size.mean() - 0.25) < 0.005


def test_flip_and_crop_frequencies(draws) -> None:
    """Flip 1/2 +- 0.015; crop offsets uniform over the 9 positions of pad 4 (+- 0.01)."""
    batched, _ = draws
    assert abs(batched.weak.flip.mean() - 0.5) < 0.015
    for offsets in (batched.weak.top, batched.weak.left):
        assert np.all(np.abs(np.bincount(offsets, minlength=9) / DRAWS - 1 / 9) < 0.01)


def test_views_statistics_match_the_per_sample_pipeline() -> None:
    """End to end on one picture, 600 views each way: the per-view mean value (mean and quartiles)
    within 0.06 in normalised units, the share of Cutout-coloured pixels within 0.01."""
    image = _images(1, seed=4)[0]
    n = 600
    batched = BatchedRandAugment(S, MEAN, STD, seed=0, crop_then_flip=False)(
        image.expand(n, -1, -1, -1).contiguous(), torch.arange(n), 0)
    pipeline = make_randaugment_transform(S, MEAN, STD, crop_then_flip=False)
    torch.manual_seed(0)
    per_sample = torch.stack([pipeline(image) for _ in range(n)])
    assert batched.shape == per_sample.shape == (n, 3, S, S) and batched.dtype == per_sample.dtype == torch.float32
    a, b = batched.mean(dim=(1, 2, 3)).numpy(), per_sample.mean(dim=(1, 2, 3)).numpy()
    assert abs(a.mean() - b.mean()) < 0.06
    assert np.all(np.abs(np.quantile(a, [0.25, 0.5, 0.75]) - np.quantile(b, [0.25, 0.5, 0.75])) < 0.06)
    fill = ((torch.tensor(CUTOUT_FILL) / 255.0 - torch.tensor(MEAN)) / torch.tensor(STD)).view(1, 3, 1, 1)

    def cut_share(v: torch.Tensor) -> float:
        return (v - fill).abs().amax(dim=1).lt(1e-4).float().mean().item()

    assert 0.03 < cut_share(batched) < 0.12 and abs(cut_share(batched) - cut_share(per_sample)) < 0.01


# ---------------------------------------------------------------------------------------------
# Reproducibility and errors


def test_a_sample_looks_the_same_in_any_batch() -> None:
    """(seed, epoch, index, slot) fixes the batched view: whole batch, a shuffled part, micro-batches."""
    images, index = _images(24), torch.arange(100, 124)
    view = BatchedRandAugment(S, MEAN, STD, seed=7, crop_then_flip=True)
    full = view(images, index, 3)
    part = torch.randperm(24, generator=torch.Generator().manual_seed(0))[:9]
    assert torch.equal(view(images[part], index[part], 3), full[part])
    assert torch.equal(torch.cat([view(images[c], index[c], 3) for c in torch.arange(24).chunk(4)]), full)
    assert not torch.equal(view(images, index, 4), full)
    assert not torch.equal(BatchedRandAugment(S, MEAN, STD, seed=7, crop_then_flip=True, slot=2)(images, index, 3),
                           full)
    pipeline = make_randaugment_transform(S, MEAN, STD, crop_then_flip=True)
    torch.manual_seed(5)
    first = pipeline(images[0])
    torch.manual_seed(5)
    assert torch.equal(pipeline(images[0]), first)  # per sample: a function of torch's generator state


def test_bad_inputs_are_rejected() -> None:
    view = BatchedRandAugment(S, MEAN, STD, seed=0, crop_then_flip=False)
    with pytest.raises(DataError, match="uint8"):
        view(_images(2).float(), torch.arange(2), 0)
    with pytest.raises(DataError, match="data.image_size=32"):
        view(_images(2)[:, :, :16, :16], torch.arange(2), 0)
    with pytest.raises(DataError, match="uint8"):
        make_randaugment_transform(S, MEAN, STD, crop_then_flip=False)(_images(1)[0].float())
