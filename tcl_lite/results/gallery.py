"""The label-issue gallery: a PNG grid of the top-N suspects (thumbnail, given -> suggested label,
score) above the N samples whose labels the method trusts most, for contrast.

Drawn on an explicit Agg canvas like the report's other figures (no pyplot, no global backend).
The pixel size is a function of N and the column count only (``gallery_pixels``), so it can be
checked.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
CELL_W, CELL_H = 1.7, 2.0  # inches per thumbnail with its two-line title
HEADER_H = 0.6  # inches above each block for its title
WRONG, RIGHT, UNKNOWN = "#c0392b", "#1e8449", "#222222"


def gallery_grid(top: int, cols: int = 8) -> tuple[int, int]:
    """(rows per block, columns) of the grid for ``top`` samples per block."""
    cols = max(1, min(cols, top))
    return math.ceil(top / cols), cols


def gallery_pixels(top: int, cols: int = 8) -> tuple[int, int]:
    """(width, height) of the PNG in pixels: two blocks of ``rows x cols`` cells."""
    rows, cols = gallery_grid(top, cols)
    return round(cols * CELL_W * DPI), round(2 * (rows * CELL_H + HEADER_H) * DPI)


def thumbnail(issues: Any, index: int, size: int = 128) -> np.ndarray:
    """The training image ``index`` as uint8 HWC: from its file when there is one (sharper than the
    training resolution), else the stored tensor."""
    images = issues.data.train.images
    if hasattr(images, "paths"):
        from PIL import Image

        with Image.open(images.paths[index]) as img:
            img = img.convert("RGB")
            img.thumbnail((size, size))
            return np.asarray(img)
    return images[index].permute(1, 2, 0).numpy()


def _short(name: str, width: int = 11) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def _draw_block(sub: Any, issues: Any, ranks: list[int], cols: int, rows: int, suspects: bool) -> None:
    axes = sub.subplots(rows, cols, squeeze=False)
    names = issues.class_names
    for ax in axes.flat:
        ax.axis("off")
    for ax, r in zip(axes.flat, ranks):
        image = thumbnail(issues, int(issues.index[r]))
        small = image.shape[0] < 64
        ax.imshow(image, cmap=None, interpolation="nearest" if small else "antialiased")
        given, suggested = names[issues.given[r]], names[issues.suggested[r]]
        colour = UNKNOWN
        if issues.true is not None:
            colour = WRONG if issues.given[r] != issues.true[r] else RIGHT
        label = f"{_short(given)} → {_short(suggested)}" if suspects else f"{_short(given)}"
        ax.set_title(f"{label}\n#{int(issues.index[r])}  score {issues.score[r]:.2f}", fontsize=9, color=colour,
                     pad=3)


def draw_gallery(issues: Any, path: str | Path, top: int = 24, cols: int = 8) -> dict[str, int]:
    """Write the gallery PNG; returns how many suspects and clean samples it shows."""
    top = max(1, min(top, len(issues) // 2 if len(issues) > 1 else 1))
    rows, cols = gallery_grid(top, cols)
    width, height = gallery_pixels(top, cols)
    suspects = list(range(top))
    clean = list(range(len(issues) - 1, len(issues) - 1 - top, -1))  # lowest scores, most trusted first
    legend = (" — red: the given label is truly wrong, green: truly right" if issues.true is not None else "")
    with matplotlib.rc_context({"font.size": 9}):
        fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        top_fig, bottom_fig = fig.subfigures(2, 1)
        precision = issues.precision_at(top)
        top_fig.suptitle(f"{top} most likely wrong labels ({issues.method}): given → suggested"
                         + (f"; precision@{top} = {precision:.2f}" if precision is not None else "") + legend,
                         fontsize=11, fontweight="bold")
        _draw_block(top_fig, issues, suspects, cols, rows, suspects=True)
        bottom_fig.suptitle(f"{top} labels the method trusts most (lowest scores), for contrast",
                            fontsize=11, fontweight="bold")
        _draw_block(bottom_fig, issues, clean, cols, rows, suspects=False)
        fig.savefig(path, dpi=DPI, format="png")
    return {"suspects": len(suspects), "clean": len(clean)}
