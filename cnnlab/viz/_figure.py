"""Figure helpers shared by the visualisations: new figures, tiles, colour bars.

Figures are made with ``matplotlib.figure.Figure`` directly, not through ``pyplot``: no
global state, nothing to close, and a notebook shows the returned figure once. Saving is
cnnlab.io.figures.save_figure (the one helper for every figure cnnlab writes).
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
from matplotlib.figure import Figure

from cnnlab.io.figures import DPI

TITLE_SIZE = 13


def new_figure(width: float, height: float) -> Figure:
    """A figure (size in inches) whose parts are laid out by matplotlib's constrained layout."""
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def colorbar(fig, im, ax, label: str | None = None, extend: str = "neither"):
    """A colour bar hugging the right edge of the image drawn in `ax` (not of its grid cell)."""
    cax = ax.inset_axes([1.03, 0.0, 0.045, 1.0])
    cb = fig.colorbar(im, cax=cax, extend=extend)
    cb.ax.tick_params(labelsize=8)
    if label:
        cb.set_label(label, fontsize=8)
    return cb


def extend_for(values: np.ndarray, vmin: float, vmax: float) -> str:
    """Colour-bar arrows saying that some values lie beyond the colour range."""
    low = values.size > 0 and float(values.min()) < vmin - 1e-6
    high = values.size > 0 and float(values.max()) > vmax + 1e-6
    return {(True, True): "both", (True, False): "min", (False, True): "max"}.get((low, high), "neither")


def fill_title(lines: list[str], width: float, size: float = TITLE_SIZE) -> str:
    """Join title lines, wrapping each to fit a figure `width` inches wide."""
    chars = max(20, int(width * 72 / (0.52 * size)))
    return "\n".join(textwrap.fill(line, chars) for line in lines)


def mosaic(tiles: np.ndarray, cols: int, gap: tuple[int, int] = (1, 1)) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Lay (n, h, w) or (n, h, w, 3) tiles out in one image, `cols` to a row.

    Between tiles are `gap` (rows, columns) of empty pixels: NaN for values (drawn in the
    colour map's "bad" colour), transparent for RGB. Drawing one image instead of one
    Axes per tile keeps large layers fast to draw. Returns the image and each tile's
    top-left (row, column).
    """
    n, h, w = tiles.shape[:3]
    rows, cols = grid_shape(n, cols)
    gy, gx = gap
    height, width = rows * h + (rows - 1) * gy, cols * w + (cols - 1) * gx
    rgb = tiles.ndim == 4
    out = np.zeros((height, width, 4)) if rgb else np.full((height, width), np.nan)
    origins = []
    for i in range(n):
        y, x = (i // cols) * (h + gy), (i % cols) * (w + gx)
        origins.append((y, x))
        if rgb:
            out[y:y + h, x:x + w, :3] = tiles[i]
            out[y:y + h, x:x + w, 3] = 1.0
        else:
            out[y:y + h, x:x + w] = tiles[i]
    return out, origins


def grid_shape(n: int, cols: int) -> tuple[int, int]:
    """(rows, cols) for n tiles at most `cols` wide."""
    cols = max(1, min(cols, n))
    return math.ceil(n / cols), cols


def hide_ticks(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def symmetric_limit(values: np.ndarray, percentile: float = 100.0) -> float:
    """A positive v such that [-v, v] shows `values` with zero in the middle of the colours."""
    v = float(np.percentile(np.abs(values), percentile)) if values.size else 0.0
    return v if v > 0 else 1.0


def image_to_display(x, normalization=None) -> np.ndarray:
    """A (C, H, W) tensor (normalised as for the model) -> (H, W, 3) or (H, W) floats in [0, 1]."""
    if normalization is not None:
        x = normalization.invert(x)
    arr = x.detach().cpu().float().clamp(0, 1).numpy()
    return arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)


def show_image(ax, img: np.ndarray, title: str | None = None):
    """An RGB (H, W, 3) or grey (H, W) image in [0, 1]; small images keep square pixels."""
    interpolation = "nearest" if max(img.shape[:2]) <= 128 else "antialiased"
    if img.ndim == 2:
        im = ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation=interpolation)
    else:
        im = ax.imshow(img, interpolation=interpolation)
    hide_ticks(ax)
    if title:
        ax.set_title(title)
    return im
