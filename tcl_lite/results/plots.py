"""The report's figures, as PNG files of a fixed pixel size.

Figures are built with the object-oriented API on an explicit Agg canvas, never through pyplot: no
global backend is switched (a notebook's inline backend is left alone), no window is opened, and
nothing leaks between calls. Sizes are fixed (no ``bbox_inches="tight"``, which would crop to the
content) so that every PNG has the pixel size listed in ``FIGURE_PIXELS``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tcl_lite.errors import ConfigError
from tcl_lite.methods import METHODS, get_method

DPI = 100
# Inches at DPI -> pixels; the tests check the saved PNGs against FIGURE_PIXELS.
_FIGSIZE: dict[str, tuple[float, float]] = {
    "accuracy.png": (12.0, 4.5),
    "clean_probability.png": (8.0, 4.5),
    "noise_rate.png": (8.0, 4.5),
    "confusion.png": (12.0, 5.5),
}
FIGURE_PIXELS: dict[str, tuple[int, int]] = {k: (round(w * DPI), round(h * DPI)) for k, (w, h) in _FIGSIZE.items()}

_STYLE = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10,
          "xtick.labelsize": 10, "ytick.labelsize": 10, "axes.grid": True, "grid.alpha": 0.3}
# Accuracy-like series every run may log: key -> legend label. A method's own series and labels come
# from its class's ``metric_labels`` (the method registry); only the keys a run logged are drawn.
ACCURACY_SERIES = {
    "val_acc": "validation accuracy (on its noisy labels)",
    "test_acc": "test accuracy",
}
_MARKERS = "osD^vP*X"


def accuracy_series(method: str | None = None) -> dict[str, str]:
    """The generic series, then ``metric_labels`` of ``method``'s class (of every registered method when
    ``method`` is None or not registered in this process)."""
    try:
        classes = [get_method(method)] if method is not None else list(METHODS.values())
    except ConfigError:
        classes = list(METHODS.values())
    series = dict(ACCURACY_SERIES)
    for cls in classes:
        series.update({k: v for k, v in cls.metric_labels.items() if k not in series})
    return series


def _figure(name: str, ncols: int = 1) -> tuple[Figure, Any]:
    with matplotlib.rc_context(_STYLE):  # rc is read when the figure and axes are made
        fig = Figure(figsize=_FIGSIZE[name], dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _save(fig: Figure, out_dir: Path, name: str) -> Path:
    path = Path(out_dir) / name
    with matplotlib.rc_context(_STYLE):
        fig.savefig(path, dpi=DPI, format="png")
    return path


def _epochs(records: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    pairs = [(r["epoch"], r[key]) for r in records if r.get(key) is not None and "epoch" in r]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _integer_epochs(ax: Any, records: Sequence[dict[str, Any]]) -> None:
    """Whole-epoch ticks, and limits padded by half an epoch: one or two epochs would otherwise get
    fractional ticks around a single point."""
    epochs = [r["epoch"] for r in records if "epoch" in r] or [1]
    lo, hi = min(epochs), max(epochs)
    pad = max(0.5, 0.03 * (hi - lo))
    ax.set_xlim(lo - pad, hi + pad)
    if hi - lo <= 12:  # MaxNLocator falls back to fractions when fewer than two integers are in range
        ax.set_xticks(range(int(lo), int(hi) + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_accuracy(records: Sequence[dict[str, Any]], out_dir: Path, title: str = "", method: str | None = None) -> Path:
    """Left: validation/test accuracy and the method's metrics (``accuracy_series(method)``) per epoch;
    right: the mean training loss."""
    fig, (acc_ax, loss_ax) = _figure("accuracy.png", ncols=2)
    with matplotlib.rc_context(_STYLE):
        # a marker shape per series: equal values (e.g. MLNT's student and teacher early on) stay visible
        for (key, label), marker in zip(accuracy_series(method).items(), itertools.cycle(_MARKERS)):
            x, y = _epochs(records, key)
            if x:
                acc_ax.plot(x, [100 * v for v in y], marker=marker, markersize=5, fillstyle="none", label=label)
        acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy per epoch", ylim=(0, 100))
        # Legends sit below the axes: inside, they hide points wherever the curves happen to be.
        acc_ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
        x, y = _epochs(records, "train_loss")
        loss_ax.plot(x, y, marker="o", markersize=3, color="tab:red", label="mean training loss")
        loss_ax.set(xlabel="epoch", ylabel="loss (method's total)", title="Training loss per epoch")
        loss_ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16))
        for ax in (acc_ax, loss_ax):
            _integer_epochs(ax, records)
        if title:
            fig.suptitle(title)
    return _save(fig, out_dir, "accuracy.png")


def plot_clean_probability(w: np.ndarray, clean: np.ndarray | None, out_dir: Path, title: str = "",
                           xlabel: str = "clean probability") -> Path:
    """Histogram of a method's clean probability, split into truly clean / truly noisy samples when known."""
    fig, (ax,) = _figure("clean_probability.png")
    bins = np.linspace(0.0, 1.0, 26)
    with matplotlib.rc_context(_STYLE):
        if clean is not None:  # side-by-side bars: overlaid translucent ones mix into an unreadable colour
            ax.hist([w[clean], w[~clean]], bins=bins, color=["tab:green", "tab:red"],
                    label=[f"truly clean label ({int(clean.sum())})", f"truly noisy label ({int((~clean).sum())})"])
        else:  # without true labels the split is unknown: one histogram of all samples
            ax.hist(w, bins=bins, color="tab:blue", alpha=0.8, label=f"all training samples ({len(w)})")
        ax.axvline(0.5, color="black", linestyle="--", linewidth=1, label="threshold 0.5 (clean above)")
        ax.set(xlabel=xlabel, ylabel="training samples", xlim=(0, 1),
               title=title or "Clean probability per training sample")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3)
    return _save(fig, out_dir, "clean_probability.png")


def plot_noise_rate(records: Sequence[dict[str, Any]], true_rate: float | None, out_dir: Path,
                    title: str = "") -> Path:
    """Estimated noise rate (1 - est_clean_fraction) per epoch against the true rate of the run."""
    fig, (ax,) = _figure("noise_rate.png")
    x, y = _epochs(records, "est_clean_fraction")
    with matplotlib.rc_context(_STYLE):
        ax.plot(x, [100 * (1 - v) for v in y], marker="o", markersize=3, color="tab:purple",
                label="estimated noise rate (1 - estimated clean fraction)")
        if true_rate is not None:
            ax.axhline(100 * true_rate, color="black", linestyle="--",
                       label=f"true noise rate ({100 * true_rate:.1f}%)")
        ax.set(xlabel="epoch", ylabel="noisy labels (%)", ylim=(0, 100),
               title=title or "Estimated vs true label-noise rate")
        _integer_epochs(ax, records)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    return _save(fig, out_dir, "noise_rate.png")


def confusion_counts(rows: np.ndarray, cols: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[i, j] = number of samples with rows == i and cols == j."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (rows, cols), 1)
    return counts


def _matrix(ax: Any, counts: np.ndarray, names: Sequence[str], ylabel: str, xlabel: str, title: str) -> Any:
    k = len(counts)
    # Colour by row fraction so that classes of different sizes compare; the numbers are counts.
    frac = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    ax.grid(False)
    step = max(1, int(np.ceil(k / 20)))  # at most ~20 tick labels (CIFAR-100 has 100 classes)
    ticks = np.arange(0, k, step)
    ax.set_xticks(ticks, [names[i] for i in ticks], rotation=90 if k > 10 or max(map(len, names)) > 3 else 0)
    ax.set_yticks(ticks, [names[i] for i in ticks])
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if k <= 12:  # numbers are readable only for a few classes
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if frac[i, j] > 0.5 else "black")
    return image


def plot_confusion(given: np.ndarray, corrected: np.ndarray, true: np.ndarray | None, names: Sequence[str],
                   out_dir: Path, label: str = "corrected label") -> Path:
    """The method's labels (``label``: corrected, suggested...) vs the given labels, and vs the true
    labels when the run knows them."""
    k = len(names)
    fig, axes = _figure("confusion.png", ncols=2 if true is not None else 1)
    with matplotlib.rc_context(_STYLE):
        image = _matrix(axes[0], confusion_counts(given, corrected, k), names, "given (noisy) label",
                        label, f"{label.capitalize()} vs given label")
        if true is not None:
            _matrix(axes[1], confusion_counts(true, corrected, k), names, "true label", label,
                    f"{label.capitalize()} vs true label")
        # On the last axes only: a colorbar shared by a list of equal-aspect axes makes the constrained
        # layout push the titles out of the figure.
        fig.colorbar(image, ax=axes[-1], label="fraction of the row", fraction=0.046, pad=0.04)
        fig.suptitle("Where the labels go (colour: fraction of the row, numbers: samples)")
    return _save(fig, out_dir, "confusion.png")
