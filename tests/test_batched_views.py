"""data.augment_on=device: batched views match the per-sample pipeline, are a function of
(seed, epoch, index), and keep kill-and-resume bit-exact on CPU."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, assert_same_weights, final_weights, run_env, run_train, train_cmd
from torch.utils.data import DataLoader
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from tcl_lite.config import DataConfig
from tcl_lite.data import build_data, make_transform, mix_seed
from tcl_lite.data.batched_views import (
    BatchedViews,
    pad_crop_flip,
    sample_keys,
    strong_params,
    strong_view,
    weak_params,
)
from tcl_lite.data.build import resolve_augment_on
from tcl_lite.errors import DataError

S = 32
DRAWS = 10_000
MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)


def _images(n: int, seed: int = 0) -> torch.Tensor:
    """Smooth, photo-like uint8 images (random 8x8 colours upsampled), so colour ops matter."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, 8, 8, generator=g) * 255
    return torch.nn.functional.interpolate(small, size=S, mode="bilinear").round().to(torch.uint8)


def _strong_pipeline() -> v2.Compose:
    return make_transform("strong", S, MEAN, STD)


@pytest.fixture(scope="module")
def drawn() -> object:
    return strong_params(sample_keys(3, 1, np.arange(DRAWS)), 1, S)


def test_keys_are_mix_seed() -> None:
    index = np.array([0, 1, 7, 49_999, 2**40])
    assert sample_keys(5, 3, index).tolist() == [mix_seed(5, 3, i) for i in index]


def _quantiles(x: np.ndarray) -> np.ndarray:
    return np.quantile(x, [0.1, 0.25, 0.5, 0.75, 0.9])


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov distance (largest gap between the empirical CDFs)."""
    grid = np.union1d(a, b)
    cdf = [np.searchsorted(np.sort(x), grid, side="right") / len(x) for x in (a, b)]
    return float(np.abs(cdf[0] - cdf[1]).max())


# At 10k against 10k draws the KS distance of one distribution exceeds 0.03 with probability < 0.001.
KS_LIMIT = 0.03


def test_crop_scale_ratio_and_position_match_torchvision(drawn) -> None:
    """10k crops: area fraction and aspect ratio (mean within 0.01 / 0.02, KS distance < 0.03) of
    torchvision's RandomResizedCrop (the pipeline's own instance) at 32 px, where rounding and the
    ten-tries rule shape both; the crop's position relative to its free range likewise."""
    rrc = _strong_pipeline().transforms[0]
    assert isinstance(rrc, v2.RandomResizedCrop)
    torch.manual_seed(0)
    image = torch.zeros(3, S, S, dtype=torch.uint8)
    ref = np.array([[p["top"], p["left"], p["height"], p["width"]]
                    for p in (rrc.make_params([image]) for _ in range(DRAWS))], dtype=np.float64)
    ours = np.stack([drawn.top, drawn.left, drawn.height, drawn.width], 1).astype(np.float64)
    for name, tol, f in (("scale", 0.01, lambda a: a[:, 2] * a[:, 3] / S**2),
                         ("ratio", 0.02, lambda a: a[:, 3] / a[:, 2]),
                         ("relative top", 0.02, lambda a: (a[:, 0] + 0.5) / (S - a[:, 2] + 1)),
                         ("relative left", 0.02, lambda a: (a[:, 1] + 0.5) / (S - a[:, 3] + 1))):
        a, b = f(ours), f(ref)
        assert abs(a.mean() - b.mean()) < tol, name
        assert _ks(a, b) < KS_LIMIT, (name, _ks(a, b), _quantiles(a), _quantiles(b))
    assert np.all(ours[:, 2:] >= 1) and np.all(ours[:, 2:] <= S)
    assert np.all(ours[:, 0] + ours[:, 2] <= S) and np.all(ours[:, 1] + ours[:, 3] <= S)


def test_jitter_factors_and_order_match_torchvision(drawn) -> None:
    """Each ColorJitter factor: mean and 5 quantiles within 0.01 (brightness/contrast/saturation,
    range 0.8) or 0.003 (hue, range 0.2) of torchvision's draws, KS distance < 0.03; every op at
    every position 1/4 +- 0.015 (uniform random order)."""
    jitter = _strong_pipeline().transforms[2].transforms[0]
    assert isinstance(jitter, v2.ColorJitter)
    torch.manual_seed(1)
    ref = [jitter.make_params([]) for _ in range(DRAWS)]
    keys = ("brightness_factor", "contrast_factor", "saturation_factor", "hue_factor")
    for k, (key, tol) in enumerate(zip(keys, (0.01, 0.01, 0.01, 0.003))):
        a, b = drawn.factors[:, k], np.array([p[key] for p in ref])
        assert abs(a.mean() - b.mean()) < tol, key
        assert np.all(np.abs(_quantiles(a) - _quantiles(b)) < tol), key
        assert _ks(a, b) < KS_LIMIT, key
    # ColorJitter's random order: a uniform permutation in both
    ref_order = np.array([p["fn_idx"].tolist() for p in ref])
    for order in (drawn.order, ref_order):
        freq = np.stack([(order == op).mean(0) for op in range(4)])  # [op, position]
        assert np.all(np.abs(freq - 0.25) < 0.015), freq
    assert {tuple(o) for o in drawn.order.tolist()} == {tuple(o) for o in ref_order.tolist()}  # all 24


def test_probabilities_match_the_pipeline(drawn) -> None:
    """Flip, jitter, grayscale, solarize frequencies within 0.015 (3 sd at 10k) of the pipeline's p."""
    pipeline = _strong_pipeline().transforms
    expected = {"flip": pipeline[1].p, "jitter": pipeline[2].p, "gray": pipeline[3].p, "solarize": pipeline[4].p}
    assert expected == {"flip": 0.5, "jitter": 0.8, "gray": 0.2, "solarize": 0.5}
    for name, p in expected.items():
        assert abs(getattr(drawn, name).mean() - p) < 0.015, name
    # independent of each other: the joint frequency is the product
    assert abs((drawn.gray & drawn.solarize).mean() - 0.1) < 0.01
    weak = weak_params(sample_keys(3, 1, np.arange(DRAWS)), 0, S)
    assert abs(weak.flip.mean() - 0.5) < 0.015
    for offsets in (weak.top, weak.left):  # RandomCrop(32, padding=4): 9 positions, uniform
        assert np.all(np.abs(np.bincount(offsets, minlength=9) / DRAWS - 1 / 9) < 0.01)


def _torchvision_strong(image: torch.Tensor, p, b: int) -> torch.Tensor:
    """The per-sample pipeline's kernels with the batched path's parameters of sample b."""
    y = TF.resized_crop(image, int(p.top[b]), int(p.left[b]), int(p.height[b]), int(p.width[b]), [S, S],
                        antialias=True)
    if p.flip[b]:
        y = TF.horizontal_flip(y)
    if p.jitter[b]:
        ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
        for k in p.order[b]:
            y = ops[k](y, float(p.factors[b, k]))
    if p.gray[b]:
        y = TF.rgb_to_grayscale(y, num_output_channels=3)
    if p.solarize[b]:
        y = TF.solarize(y, 128)
    return y


def test_pixels_match_torchvision_given_the_same_parameters() -> None:
    """Same parameters: the weak view is identical; a strong view differs by rounding only
    (under 1% of the values differ, by at most 4 of 255 levels: a rounding step of 1 that a later
    jitter factor up to 1.4 amplifies; mean absolute difference under 0.02 levels)."""
    images = _images(128)
    keys = sample_keys(0, 2, np.arange(128))
    p = strong_params(keys, 1, S)
    ours = strong_view(images.float(), p, S)
    ref = torch.stack([_torchvision_strong(images[b], p, b) for b in range(128)]).float()
    diff = (ours - ref).abs()
    assert diff.max() <= 4 and (diff > 0).float().mean() < 0.01 and diff.mean() < 0.02, diff.max()
    w = weak_params(keys, 0, S)
    ref_weak = []
    for b in range(128):
        y = TF.crop(TF.pad(images[b], [4]), int(w.top[b]), int(w.left[b]), S, S)
        ref_weak.append(TF.horizontal_flip(y) if w.flip[b] else y)
    assert torch.equal(pad_crop_flip(images.float(), w, S), torch.stack(ref_weak).float())


def test_views_statistics_match_the_per_sample_pipeline() -> None:
    """End to end on one picture, 800 strong views each way: the per-view mean value (its mean and
    quartiles) within 0.06 (normalised units), the share of grey views within 0.05."""
    image = _images(1, seed=4)[0]
    n = 800
    batched = BatchedViews(("strong",), S, MEAN, STD, seed=0)(image.expand(n, -1, -1, -1).contiguous(),
                                                               torch.arange(n), 0)
    pipeline = _strong_pipeline()
    torch.manual_seed(0)
    per_sample = torch.stack([pipeline(image) for _ in range(n)])
    std = torch.tensor(STD).view(1, 3, 1, 1)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    for name, tol, stat in (
            ("mean", 0.06, lambda v: v.mean(dim=(1, 2, 3))),
            ("grey", None, lambda v: ((v * std + mean).diff(dim=1).abs().amax(dim=(1, 2, 3)) < 1e-4).float())):
        a, b = stat(batched).numpy(), stat(per_sample).numpy()
        if tol is None:
            assert abs(a.mean() - b.mean()) < 0.05 and 0.12 < a.mean() < 0.3, (name, a.mean(), b.mean())
        else:
            assert abs(a.mean() - b.mean()) < tol
            assert np.all(np.abs(np.quantile(a, [0.25, 0.5, 0.75]) - np.quantile(b, [0.25, 0.5, 0.75])) < tol)


def test_a_sample_looks_the_same_in_any_batch() -> None:
    """(seed, epoch, index) fixes a view: whole batch, a shuffled part of it, micro-batches."""
    images, index = _images(48), torch.arange(100, 148)
    views = BatchedViews(("weak", "strong", "strong"), S, MEAN, STD, seed=7)
    full = views(images, index, 3)
    assert len(full) == 3 and all(v.shape == (48, 3, S, S) and v.dtype == torch.float32 for v in full)
    assert not torch.equal(full[1], full[2])  # the two strong views differ
    part = torch.randperm(48, generator=torch.Generator().manual_seed(0))[:20]
    alone = views(images[part], index[part], 3)
    chunks = [views(images[c], index[c], 3) for c in torch.arange(48).chunk(4)]
    for k in range(3):
        assert torch.equal(alone[k], full[k][part])
        assert torch.equal(torch.cat([c[k] for c in chunks]), full[k])
    assert not torch.equal(views(images, index, 4)[1], full[1])  # another epoch, other views
    assert not torch.equal(BatchedViews(("weak", "strong", "strong"), S, MEAN, STD, seed=8)(images, index, 3)[1],
                           full[1])
    with pytest.raises(DataError, match="uint8"):
        views(full[0], index, 3)


def test_decode_only_loader_with_workers_then_finish_batch() -> None:
    """augment_on=device: items are uint8 images; views made after collation do not depend on the
    worker count or the batch size; auto resolves to device on a GPU and to workers on the CPU."""
    data = build_data(DataConfig(train_subset=64, augment_on="device", image_size=16), seed=0)
    train = data.train_views(("weak", "strong", "strong"))
    assert train[3]["image"].dtype == torch.uint8 and train[3]["image"].shape == (3, 16, 16)
    train.set_epoch(2)

    def views(workers: int, batch_size: int) -> dict[int, torch.Tensor]:
        loader = DataLoader(train, batch_size=batch_size, num_workers=workers, shuffle=True,
                            generator=torch.Generator().manual_seed(batch_size))
        out = {}
        for batch in loader:
            done = train.finish_batch(batch)
            for row, i in enumerate(done["index"].tolist()):
                out[i] = torch.stack([v[row] for v in done["image"]])
        return out

    a, b = views(2, 16), views(0, 8)
    assert sorted(a) == list(range(64)) and all(torch.equal(a[i], b[i]) for i in a)
    assert resolve_augment_on("auto", torch.device("cuda")) == "device"
    assert resolve_augment_on("auto", "cpu") == "workers" and resolve_augment_on("auto", None) == "workers"
    assert resolve_augment_on("device", "cpu") == "device"
    cpu = build_data(DataConfig(train_subset=64, image_size=16), seed=0)  # augment_on=auto
    assert cpu.train_views(("weak",), "cpu")[0]["image"].dtype == torch.float32
    assert cpu.train_views(("weak",), "cuda").batch_transform is not None


# ---------------------------------------------------------------------------------------------
# kill and resume, as tests/test_resume.py does it

RUN = ["method=tcl", "data.augment_on=device", "data.image_size=8", "model.width=8", "train.batch_size=32",
       "train.eval_batch_size=512", "data.train_subset=320", "train.epochs=1", "train.log_every=1000",
       "checkpoint.every_steps=4"]


def test_sigkill_mid_epoch_then_resume_is_exact_with_device_views(tmp_path: Path) -> None:
    reference = tmp_path / "uninterrupted"
    out = tmp_path / "killed"
    # The uninterrupted run and the one to kill run side by side (one core each).
    uninterrupted = subprocess.Popen(train_cmd(*RUN, f"output_dir={reference}"), cwd=ROOT, env=run_env(),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proc = subprocess.Popen(train_cmd(*RUN, f"output_dir={out}"), cwd=ROOT, env=run_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while not (out / "checkpoints" / "step_00000004").is_dir():
            assert time.monotonic() < deadline, "no checkpoint appeared"
            assert proc.poll() is None, f"finished before the kill: {proc.stderr.read().decode()[-2000:]}"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        _, err = uninterrupted.communicate(timeout=240)
        assert uninterrupted.returncode == 0, err.decode()[-3000:]
    finally:
        proc.wait()
        uninterrupted.kill()
        uninterrupted.wait()
    assert proc.returncode == -signal.SIGKILL
    resumed = run_train(*RUN, f"output_dir={out}", "--resume")
    m = re.search(r"resumed from .* \(epoch (\d+), step (\d+) of the epoch", resumed.stdout)
    assert m and 0 < int(m.group(2)) < 10, resumed.stdout[-2000:]  # inside the epoch (10 steps)
    assert_same_weights(final_weights(out), final_weights(reference))
