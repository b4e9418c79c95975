"""Label noise (symmetric / asymmetric / pair flip) and label files (.npy, .csv, CIFAR-N .pt)."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch

from tcl_lite.config import DataConfig
from tcl_lite.data import (
    asymmetric_map,
    asymmetric_noise,
    build_data,
    load_label_file,
    pairflip_noise,
    read_label_file,
    symmetric_noise,
)
from tcl_lite.data.noise import CIFAR100_COARSE
from tcl_lite.errors import DataError

# ---------------------------------------------------------------------------------------------
# symmetric


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.45, 0.5, 0.9, 1.0])
def test_symmetric_resamples_exactly_round_rn(rate: float) -> None:
    # With a million classes a resampled label practically never equals the old one, so the number
    # of changed labels is the number of resampled samples.
    n, k = 999, 1_000_000
    labels = np.zeros(n, dtype=np.int64)
    noisy = symmetric_noise(labels, k, rate, seed=3)
    assert int((noisy != labels).sum()) == round(rate * n)


def test_symmetric_is_deterministic_and_seeded() -> None:
    labels = np.random.default_rng(0).integers(0, 10, 2000)
    a = symmetric_noise(labels, 10, 0.5, seed=7)
    b = symmetric_noise(labels, 10, 0.5, seed=7)
    c = symmetric_noise(labels, 10, 0.5, seed=8)
    assert a.dtype == np.int64 and np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_symmetric_leaves_input_alone_and_rate_zero_is_identity() -> None:
    labels = np.random.default_rng(1).integers(0, 10, 500)
    before = labels.copy()
    assert np.array_equal(symmetric_noise(labels, 10, 0.0, seed=0), labels)
    symmetric_noise(labels, 10, 0.8, seed=0)
    assert np.array_equal(labels, before)


def test_symmetric_rate_one_is_uniform() -> None:
    labels = np.zeros(50_000, dtype=np.int64)  # all one class: the output is the uniform draw alone
    counts = np.bincount(symmetric_noise(labels, 10, 1.0, seed=0), minlength=10) / 50_000
    assert np.all(np.abs(counts - 0.1) < 0.01)


@pytest.mark.parametrize("rate,k", [(0.2, 10), (0.4, 10), (0.8, 100), (0.9, 10)])
def test_symmetric_real_flip_rate(rate: float, k: int) -> None:
    labels = np.random.default_rng(2).integers(0, k, 50_000)
    flipped = float(np.mean(symmetric_noise(labels, k, rate, seed=5) != labels))
    assert abs(flipped - rate * (1 - 1 / k)) < 0.01


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_noise_rate_out_of_range(rate: float) -> None:
    labels = np.zeros(10, dtype=np.int64)
    with pytest.raises(DataError, match="data.noise_rate"):
        symmetric_noise(labels, 10, rate, seed=0)
    with pytest.raises(DataError, match="data.noise_rate"):
        asymmetric_noise(labels, "cifar10", rate, seed=0)


def test_symmetric_rejects_labels_out_of_range() -> None:
    with pytest.raises(DataError, match=r"\[0, 3\)"):
        symmetric_noise(np.array([0, 1, 3]), 3, 0.5, seed=0)


# ---------------------------------------------------------------------------------------------
# asymmetric

CIFAR10_EXPECTED = {0: 0, 1: 1, 2: 0, 3: 5, 4: 7, 5: 3, 6: 6, 7: 7, 8: 8, 9: 1}


def test_asymmetric_cifar10_mapping_at_rate_one() -> None:
    labels = np.repeat(np.arange(10), 50)
    noisy = asymmetric_noise(labels, "cifar10", 1.0, seed=0)
    assert np.array_equal(noisy, np.array([CIFAR10_EXPECTED[y] for y in labels]))


def test_asymmetric_cifar10_touches_only_the_chosen_fraction() -> None:
    # Cats only: every chosen sample becomes a dog, so the changed count is the chosen count.
    cats = np.full(1001, 3)
    noisy = asymmetric_noise(cats, "cifar10", 0.4, seed=1)
    assert int((noisy != cats).sum()) == round(0.4 * 1001)
    assert set(np.unique(noisy)) == {3, 5}
    # Mixed classes: changes follow the map, untouched classes never change, about r of the others flip.
    labels = np.random.default_rng(0).integers(0, 10, 20_000)
    noisy = asymmetric_noise(labels, "cifar10", 0.4, seed=2)
    changed = noisy != labels
    assert np.array_equal(noisy[changed], np.array([CIFAR10_EXPECTED[y] for y in labels[changed]]))
    assert not np.any(changed & np.isin(labels, [0, 1, 6, 7, 8]))
    flippable = np.isin(labels, [2, 3, 4, 5, 9])
    assert abs(changed[flippable].mean() - 0.4) < 0.02
    assert np.array_equal(noisy, asymmetric_noise(labels, "cifar10", 0.4, seed=2))


def test_cifar100_superclass_structure() -> None:
    assert CIFAR100_COARSE.shape == (100,)
    assert np.array_equal(np.bincount(CIFAR100_COARSE, minlength=20), np.full(20, 5))
    target = asymmetric_map("cifar100")
    assert np.array_equal(np.sort(target), np.arange(100))  # a permutation
    assert np.array_equal(CIFAR100_COARSE[target], CIFAR100_COARSE)  # stays in the super-class
    for k in range(100):
        cycle = [k]
        while (nxt := int(target[cycle[-1]])) != k:
            cycle.append(nxt)
        assert len(cycle) == 5  # one 5-cycle per super-class, no fixed point
    # The next fine index, cyclically: fruit and vegetables (coarse 4) = apple, mushroom, orange,
    # pear, sweet pepper = 0, 51, 53, 57, 83.
    assert [int(target[k]) for k in (0, 51, 53, 57, 83)] == [51, 53, 57, 83, 0]


def test_asymmetric_cifar100_noise() -> None:
    labels = np.repeat(np.arange(100), 10)
    noisy = asymmetric_noise(labels, "cifar100", 1.0, seed=0)
    assert np.all(noisy != labels)
    assert np.array_equal(CIFAR100_COARSE[noisy], CIFAR100_COARSE[labels])


def test_asymmetric_other_dataset_is_an_error() -> None:
    with pytest.raises(DataError, match="cifar10 and cifar100.*digits"):
        asymmetric_noise(np.zeros(5, dtype=np.int64), "digits", 0.4, seed=0)


# ---------------------------------------------------------------------------------------------
# pair flip


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.45, 1.0])
def test_pairflip_moves_exactly_round_rn_labels_to_the_next_class(rate: float) -> None:
    labels = np.random.default_rng(4).integers(0, 10, 1001)
    noisy = pairflip_noise(labels, 10, rate, seed=6)
    changed = noisy != labels
    assert int(changed.sum()) == round(rate * len(labels))  # every chosen label changes: flip rate = rate
    assert np.array_equal(noisy[changed], (labels[changed] + 1) % 10)  # 9 -> 0 wraps around
    assert np.array_equal(noisy, pairflip_noise(labels, 10, rate, seed=6))
    if 0 < rate < 1:
        assert not np.array_equal(noisy, pairflip_noise(labels, 10, rate, seed=7))


def test_pairflip_checks_its_input_and_leaves_it_alone() -> None:
    labels = np.array([0, 1, 2, 2])
    pairflip_noise(labels, 3, 1.0, seed=0)
    assert labels.tolist() == [0, 1, 2, 2]
    with pytest.raises(DataError, match="data.noise_rate"):
        pairflip_noise(labels, 3, 1.5, seed=0)
    with pytest.raises(DataError, match=r"\[0, 2\)"):
        pairflip_noise(labels, 2, 0.5, seed=0)


def test_pairflip_through_build_data_on_the_digits() -> None:
    data = build_data(DataConfig(noise_type="pairflip", noise_rate=0.45), seed=0)
    wrong = data.noisy_labels != data.true_labels
    assert wrong.mean() == pytest.approx(0.45, abs=1 / len(wrong))
    assert np.array_equal(data.noisy_labels[wrong], (data.true_labels[wrong] + 1) % 10)


# ---------------------------------------------------------------------------------------------
# label files

N, K = 6, 4
LABELS = np.array([0, 3, 1, 2, 2, 1], dtype=np.int64)


def _numpy1_style_save(obj: object, path: pathlib.Path) -> None:
    """Save like a file written under numpy 1 (as the published CIFAR-N files are)."""
    reconstruct = np._core.multiarray._reconstruct
    old = reconstruct.__module__
    reconstruct.__module__ = "numpy.core.multiarray"
    try:
        torch.save(obj, path)
    finally:
        reconstruct.__module__ = old


def test_npy(tmp_path: pathlib.Path) -> None:
    np.save(tmp_path / "l.npy", LABELS.astype(np.int32))
    np.save(tmp_path / "f.npy", LABELS.astype(np.float64))  # whole-number floats are fine
    for name in ("l.npy", "f.npy"):
        out = load_label_file(str(tmp_path / name), N, K)
        assert out.dtype == np.int64 and np.array_equal(out, LABELS)


@pytest.mark.parametrize("text", [
    "0\n3\n1\n2\n2\n1\n",
    "label\n0\n3\n1\n2\n2\n1\n",
    "index,label\n5,1\n0,0\n2,1\n1,3\n4,2\n3,2\n",  # a table, rows in any order
    "index,noisy,label\n0,9,0\n1,9,3\n2,9,1\n3,9,2\n4,9,2\n5,9,1\n",
])
def test_csv(tmp_path: pathlib.Path, text: str) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(text)
    assert np.array_equal(load_label_file(str(path), N, K), LABELS)


@pytest.mark.parametrize("style", ["numpy2", "numpy1", "tensor"])
def test_pt_cifar_n_dictionary(tmp_path: pathlib.Path, style: str) -> None:
    clean = np.array([0, 3, 1, 2, 0, 0])
    content = {"clean_label": clean, "worse_label": LABELS, "aggre_label": clean, "random_label1": LABELS}
    path = tmp_path / "CIFAR-10_human.pt"
    if style == "numpy1":
        _numpy1_style_save(content, path)
    elif style == "tensor":
        torch.save({k: torch.as_tensor(v) for k, v in content.items()}, path)
    else:
        torch.save(content, path)
    read = read_label_file(str(path), N, K)
    assert np.array_equal(read.labels, LABELS) and np.array_equal(read.clean, clean)
    assert np.array_equal(load_label_file(str(path), N, K, key="aggre_label"), clean)


def test_pt_never_runs_pickled_code(tmp_path: pathlib.Path) -> None:
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):  # noqa: ANN204 - pickle protocol
            return (pathlib.Path.touch, (marker,))

    torch.save({"worse_label": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(DataError, match="evil.pt"):
        load_label_file(str(tmp_path / "evil.pt"), N, K)
    assert not marker.exists()


def _write(tmp_path: pathlib.Path, name: str, content: object) -> str:
    path = tmp_path / name
    if name.endswith(".npy"):
        np.save(path, content)
    elif name.endswith(".pt") and not isinstance(content, str):
        torch.save(content, path)
    else:
        path.write_text(content)
    return str(path)


@pytest.mark.parametrize("name,content,key,expected", [
    ("absent.npy", None, "worse_label", ["absent.npy", "data.noise_file"]),
    ("labels.txt", "0\n1\n", "worse_label", ["labels.txt", ".txt", ".npy"]),
    ("short.npy", np.zeros(4, dtype=np.int64), "worse_label", ["short.npy", "N=6", "length 4"]),
    ("long.csv", "0\n" * 9, "worse_label", ["long.csv", "N=6", "length 9"]),
    ("frac.npy", np.array([0, 0.5, 1, 2, 3, 1]), "worse_label", ["frac.npy", "not integers", "0.5"]),
    ("word.csv", "1\n2\ncat\n1\n1\n1\n", "worse_label", ["word.csv:3", "cat"]),
    ("range.npy", np.array([0, 1, 2, 3, 4, 1]), "worse_label", ["range.npy", "[0, 4)", "index 4"]),
    ("neg.csv", "0\n1\n-1\n1\n1\n1\n", "worse_label", ["neg.csv", "[0, 4)"]),
    ("key.pt", {"clean_label": LABELS, "noisy_label": LABELS}, "worse_label",
     ["key.pt", "'worse_label'", "clean_label, noisy_label", "data.noise_key"]),
    ("garbage.pt", "not a pickle", "worse_label", ["garbage.pt", "weights_only"]),
    ("obj.npy", np.array([0, "a", None, 1, 1, 1], dtype=object), "worse_label", ["obj.npy"]),
    ("twod.npy", np.zeros((6, 2), dtype=np.int64), "worse_label", ["twod.npy", "1-D"]),
    ("cols.csv", "0,1\n1,1\n", "worse_label", ["cols.csv", "header", "index,label"]),
    ("badindex.csv", "index,label\n0,1\n0,1\n1,1\n2,1\n3,1\n4,1\n", "worse_label", ["badindex.csv", "index"]),
])
def test_label_file_errors(tmp_path: pathlib.Path, name: str, content: object, key: str,
                           expected: list[str]) -> None:
    path = str(tmp_path / name) if content is None else _write(tmp_path, name, content)
    with pytest.raises(DataError) as info:
        load_label_file(path, N, K, key=key)
    for text in expected:
        assert text in str(info.value)
