"""Synthetic label noise (the paper's symmetric and asymmetric forms) and label files (CIFAR-N etc.).

Every function is deterministic given its seed and never modifies its input.
"""

from __future__ import annotations

import csv
import os
import re
from typing import NamedTuple

import numpy as np
import torch

from tcl_lite.errors import DataError

# CIFAR-10 asymmetric noise of the reference: truck->automobile, bird->airplane, deer->horse,
# cat->dog, dog->cat; the other classes keep their label.
CIFAR10_ASYMMETRIC = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}

# CIFAR-100 fine label -> coarse (super-class) label, from the dataset's meta file.
CIFAR100_COARSE = np.array([
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3,
    3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15,
    0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10,
    16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19,
    2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19,
    18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
], dtype=np.int64)

NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
# CIFAR-10's classes in its label order: the order the "cifar10" map is defined on (an image folder with
# exactly these classes takes it too).
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def asymmetric_map(dataset: str) -> np.ndarray:
    """``target[k]`` = the label class k is flipped to (``k`` itself when the class is not flipped)."""
    if dataset == "cifar10":
        target = np.arange(10, dtype=np.int64)
        for src, dst in CIFAR10_ASYMMETRIC.items():
            target[src] = dst
        return target
    if dataset == "cifar100":
        # The next fine class (cyclically, by fine index) among the 5 of the same super-class.
        target = np.empty(100, dtype=np.int64)
        for coarse in range(20):
            members = np.flatnonzero(CIFAR100_COARSE == coarse)  # sorted by fine index
            target[members] = np.roll(members, -1)
        return target
    raise DataError(f"asymmetric noise is defined for cifar10 and cifar100, not {dataset!r}; set "
                    "data.noise_type=symmetric or give a label file (data.noise_type=file, data.noise_file)")


def _check_rate(rate: float) -> float:
    if not 0.0 <= float(rate) <= 1.0:
        raise DataError(f"noise rate {rate!r} is outside [0, 1]; set data.noise_rate to a fraction in [0, 1]")
    return float(rate)


def _check_labels(labels: np.ndarray, num_classes: int, what: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{what} must be a 1-D integer array, got dtype {labels.dtype} shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{what} lie outside [0, {num_classes}) (min {labels.min()}, max {labels.max()}); "
                        "check the number of classes")
    return labels.astype(np.int64)


def _chosen(n: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    # Exactly round(r*N) samples, as the reference picks a fixed-size random subset.
    return rng.permutation(n)[: int(round(rate * n))]


def symmetric_noise(labels: np.ndarray, num_classes: int, rate: float, seed: int) -> np.ndarray:
    """round(rate*N) random samples get a label drawn uniformly from ALL classes (maybe the true one),
    so the real flip rate is about rate*(1 - 1/K)."""
    rate = _check_rate(rate)
    labels = _check_labels(labels, num_classes, "labels")
    rng = np.random.default_rng(seed)
    noisy = labels.copy()
    idx = _chosen(len(labels), rate, rng)
    noisy[idx] = rng.integers(0, num_classes, size=len(idx))
    return noisy


def asymmetric_noise(labels: np.ndarray, dataset: str, rate: float, seed: int) -> np.ndarray:
    """round(rate*N) random samples are mapped by ``asymmetric_map(dataset)``; the rest keep their label."""
    rate = _check_rate(rate)
    target = asymmetric_map(dataset)
    labels = _check_labels(labels, len(target), "labels")
    rng = np.random.default_rng(seed)
    noisy = labels.copy()
    idx = _chosen(len(labels), rate, rng)
    noisy[idx] = target[labels[idx]]
    return noisy


# ---------------------------------------------------------------------------------------------
# Label files


class LabelFile(NamedTuple):
    labels: np.ndarray  # int64 [N]: the labels training uses
    clean: np.ndarray | None  # int64 [N] when the file also holds the true labels (CIFAR-N clean_label)


def _numpy_safe_globals() -> list:
    """What unpickling plain numpy arrays needs, and nothing else (CIFAR-N files hold numpy arrays).

    Files written under numpy 1 name ``numpy.core.multiarray._reconstruct``, under numpy 2
    ``numpy._core...``: both names are allowed, pointing at the one function that exists.
    """
    core = getattr(np, "_core", None) or np.core
    reconstruct = core.multiarray._reconstruct
    allowed: list = [(reconstruct, "numpy.core.multiarray._reconstruct"),
                     (reconstruct, "numpy._core.multiarray._reconstruct"),
                     (np.ndarray, "numpy.ndarray"), (np.dtype, "numpy.dtype")]
    allowed += sorted({type(np.dtype(c)) for c in "?bBhHiIlLqQefd"}, key=str)
    return allowed


def _as_int_labels(values: object, path: str) -> np.ndarray:
    """A 1-D int64 array, or a DataError naming the file (floats are accepted when whole numbers)."""
    if isinstance(values, torch.Tensor):
        values = values.numpy()
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError) as e:
        raise DataError(f"label file {path!r}: labels are not an array of integers ({e})") from None
    if arr.ndim != 1:
        raise DataError(f"label file {path!r}: labels must be 1-D (one per training sample), got shape "
                        f"{arr.shape}")
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        return arr.astype(np.int64)
    bad = next((i for i, v in enumerate(arr.tolist())
                if not (isinstance(v, (int, float)) and float(v).is_integer())), 0)
    raise DataError(f"label file {path!r}: labels are not integers (dtype {arr.dtype}, e.g. {arr[bad]!r} at "
                    f"index {bad}); store integer class indices")


def _cell_int(text: str, where: str) -> int:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value.is_integer():
        raise DataError(f"{where}: {text!r} is not an integer label; labels must be integer class indices")
    return int(value)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _read_csv(path: str, key: str) -> np.ndarray:
    with open(path, newline="", encoding="utf-8") as f:
        rows = [(n, [c.strip() for c in row]) for n, row in enumerate(csv.reader(f), 1)]
    rows = [(n, row) for n, row in rows if any(row)]
    if not rows:
        raise DataError(f"label file {path!r} is empty; write one integer label per row")
    header: list[str] | None = None
    if not all(_is_number(c) for c in rows[0][1]):
        header = [c.lower() for c in rows[0][1]]
        rows = rows[1:]
    if header is None:
        label_col, index_col, width = 0, None, 1
        if len(rows[0][1]) != 1:
            raise DataError(f"label file {path!r} has {len(rows[0][1])} columns but no header; write one "
                            "label per row, or add a header row `index,label`")
    else:
        width = len(header)
        for name in (key.lower(), "label", "labels"):
            if name in header:
                label_col = header.index(name)
                break
        else:
            if width != 1:
                raise DataError(f"label file {path!r} has no `label` column (columns: {', '.join(header)}); "
                                "name the label column `label` (e.g. a header `index,label`)")
            label_col = 0
        index_col = header.index("index") if "index" in header else None
    labels = []
    indices = []
    for n, row in rows:
        if len(row) != width:
            raise DataError(f"{path}:{n}: expected {width} column(s), found {len(row)}")
        labels.append(_cell_int(row[label_col], f"{path}:{n}"))
        if index_col is not None:
            indices.append(_cell_int(row[index_col], f"{path}:{n}"))
    out = np.asarray(labels, dtype=np.int64)
    if index_col is not None:
        order = np.asarray(indices, dtype=np.int64)
        if not np.array_equal(np.sort(order), np.arange(len(order))):
            raise DataError(f"label file {path!r}: the `index` column must list every sample "
                            f"0..{len(order) - 1} exactly once")
        out = out[np.argsort(order)]
    return out


def _read_pt(path: str, key: str) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        # weights_only: tensors, containers and plain numpy arrays only; never arbitrary objects.
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the file is not a plain label file
        found = re.search(r"GLOBAL (\S+) was not an allowed global", str(e))
        detail = (f"it holds a {found.group(1)} object, which is not allowed" if found
                  else f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}")
        raise DataError(f"label file {path!r} cannot be read as a dictionary of label arrays with "
                        f"torch.load(weights_only=True): {detail}; give a CIFAR-N .pt file (a dict of label "
                        "arrays), a .npy or a .csv") from None
    if not isinstance(obj, dict):
        return _as_int_labels(obj, path), None
    if key not in obj:
        keys = ", ".join(sorted(map(str, obj)))
        raise DataError(f"label file {path!r} has no key {key!r}; available keys: {keys}; set data.noise_key "
                        "to one of them")
    clean = _as_int_labels(obj["clean_label"], path) if "clean_label" in obj else None
    return _as_int_labels(obj[key], path), clean


def read_label_file(path: str, num_samples: int, num_classes: int, key: str = "worse_label") -> LabelFile:
    """Read and check a label file; also returns ``clean_label`` when a .pt dictionary has it."""
    if not path or not os.path.isfile(path):
        raise DataError(f"label file {path!r} does not exist; set data.noise_file to an existing .npy, .csv "
                        "or CIFAR-N .pt file")
    ext = os.path.splitext(path)[1].lower()
    clean = None
    if ext == ".npy":
        try:
            raw = np.load(path, allow_pickle=False)  # no pickled objects from a data file
        except (ValueError, OSError, EOFError) as e:  # a pickle, a damaged header, an empty or cut file
            raise DataError(f"label file {path!r} is not a plain numeric .npy array ({e}); save it with "
                            "np.save(path, labels.astype(np.int64))") from None
        labels = _as_int_labels(raw, path)
    elif ext == ".csv":
        try:
            labels = _read_csv(path, key)
        except (UnicodeDecodeError, csv.Error) as e:
            raise DataError(f"label file {path!r} is not a text .csv file ({e}); write one integer label per row "
                            "(or an `index,label` table)") from None
    elif ext == ".pt":
        labels, clean = _read_pt(path, key)
    else:
        raise DataError(f"label file {path!r} has an unknown extension {ext!r}; use .npy, .csv or a "
                        "CIFAR-N .pt")
    for name, arr in (("labels", labels), ("clean_label", clean)):
        if arr is None:
            continue
        if len(arr) != num_samples:
            raise DataError(f"label file {path!r}: {name} has length {len(arr)}, but the training set has "
                            f"N={num_samples} samples; give exactly one label per training sample, in the "
                            "dataset's order")
        bad = np.flatnonzero((arr < 0) | (arr >= num_classes))
        if len(bad):
            raise DataError(f"label file {path!r}: {name} has {len(bad)} values outside [0, {num_classes}) "
                            f"(e.g. {arr[bad[0]]} at index {bad[0]}); labels must be class indices "
                            f"0..{num_classes - 1}")
    return LabelFile(labels, clean)


def load_label_file(path: str, num_samples: int, num_classes: int, key: str = "worse_label") -> np.ndarray:
    """The labels of a .npy / .csv / CIFAR-N .pt label file, checked against N and K."""
    return read_label_file(path, num_samples, num_classes, key).labels
