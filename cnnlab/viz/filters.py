"""What a trained network's convolution filters look like.

A Conv2D layer with C_in input channels and N filters holds N kernels of shape
k x k x C_in. The first layer sees the RGB image, so each of its filters can be drawn as
a small colour patch: grey is 0, and a filter that is bright red on the left and dark on
the right responds to red-to-dark edges. Deeper layers see feature maps, not colours, so
each filter is drawn as a row of k x k grids, one per input channel, on a shared
red (+) / blue (-) scale.

    >>> from cnnlab.viz import plot_filters
    >>> fig = plot_filters("runs/cats", layer="conv2d", path="filters.png")
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np

from cnnlab.errors import CnnlabError
from cnnlab.io.figures import save_figure
from cnnlab.viz._figure import (
    TITLE_SIZE,
    fill_title,
    grid_shape,
    mosaic,
    new_figure,
    symmetric_limit,
)
from cnnlab.viz._inputs import load
from cnnlab.viz._model import conv_layers, unknown

RGB_TILE = 1.0  # inches per RGB filter patch
CHANNEL_TILE = 0.55  # inches per k x k grid in the per-channel view


def filter_weights(model, layer: str | None = None) -> tuple[str, np.ndarray]:
    """(layer name, weights (filters, in channels per filter, kh, kw)); default: the first conv."""
    convs = conv_layers(model)
    if not convs:
        raise CnnlabError("this model has no convolution layers, so it has no filters to show")
    if layer is None:
        layer = next(iter(convs))
    if layer not in convs:
        raise unknown(layer, list(convs), "convolution layer")
    return layer, convs[layer].weight.detach().cpu().float().numpy()


def rgb_patches(w: np.ndarray) -> np.ndarray:
    """(N, 3, kh, kw) weights -> (N, kh, kw, 3) colours: 0.5 + w / (2 max|w|) per filter.

    Each filter gets its own scale, so weak filters are visible too; grey means 0.
    """
    limit = np.abs(w).reshape(len(w), -1).max(axis=1)
    limit[limit == 0] = 1.0
    return (0.5 + w / (2 * limit[:, None, None, None])).transpose(0, 2, 3, 1)


def _gap(k: int) -> int:
    return max(1, math.ceil(0.3 * k))


def _label_tiles(ax, origins, gap: int) -> None:
    """Each tile's number just above it (the first row gets room above the image)."""
    for i, (y, x) in enumerate(origins):
        ax.text(x - 0.5, y - 0.5, f"{i}", fontsize=8, ha="left", va="bottom")
    bottom = ax.get_ylim()[0]
    ax.set_ylim(bottom, -gap - 0.5)


def _rgb_figure(name: str, w: np.ndarray, max_filters: int):
    n = min(len(w), max_filters)
    rows, cols = grid_shape(n, 8)
    width = max(cols * RGB_TILE + 0.4, 4.0)
    kh, kw = w.shape[2:]
    shown = f"{n} of {len(w)}" if n < len(w) else f"{n}"
    title = fill_title([f"{name}: {shown} filters of {kh}×{kw}×3, drawn as RGB patches",
                        "grey = 0; each filter scaled to its own largest weight"], width)
    fig = new_figure(width, rows * (RGB_TILE + 0.25) + 0.5 + 0.25 * title.count("\n"))
    fig.suptitle(title, fontsize=TITLE_SIZE)
    gap = _gap(max(kh, kw))
    image, origins = mosaic(rgb_patches(w[:n]), cols, (gap, gap))
    ax = fig.subplots(1, 1)
    ax.imshow(image, interpolation="nearest")
    _label_tiles(ax, origins, gap)
    ax.axis("off")
    return fig


def _channel_figure(name: str, w: np.ndarray, max_filters: int, max_channels: int):
    n, c = min(len(w), max_filters), min(w.shape[1], max_channels)
    shown = w[:n, :c]
    kh, kw = w.shape[2:]
    limit = symmetric_limit(shown)
    depthwise = w.shape[1] == 1  # one k x k kernel per filter: wrap them into a square-ish grid
    rows, cols = grid_shape(n, 8) if depthwise else (n, c)
    width = max(cols * CHANNEL_TILE + 1.6, 4.0)
    more = []
    if n < len(w):
        more.append(f"first {n} of {len(w)} filters")
    if c < w.shape[1]:
        more.append(f"first {c} of {w.shape[1]} input channels")
    lines = [f"{name}: {len(w)} filters of {kh}×{kw}×{w.shape[1]}"]
    if more:
        lines.append(f"showing the {' and the '.join(more)}")
    lines.append(("one k×k kernel per filter" if depthwise else "rows: filters, columns: input channels")
                 + "; red > 0 > blue, one scale")
    title = fill_title(lines, width)
    fig = new_figure(width, rows * CHANNEL_TILE + 0.8 + 0.25 * title.count("\n"))
    fig.suptitle(title, fontsize=TITLE_SIZE)
    gap = _gap(max(kh, kw))
    image, origins = mosaic(shown.reshape(n * c, kh, kw), cols, (gap, gap))
    ax = fig.subplots(1, 1)
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="white")
    im = ax.imshow(image, cmap=cmap, vmin=-limit, vmax=limit, interpolation="nearest")
    if depthwise:
        _label_tiles(ax, origins, gap)
        ax.axis("off")
    else:  # filter numbers down the side, channel numbers along the top
        ax.set_yticks([(kh + gap) * r + (kh - 1) / 2 for r in range(rows)], [str(r) for r in range(rows)])
        ax.set_xticks([(kw + gap) * j + (kw - 1) / 2 for j in range(cols)], [str(j) for j in range(cols)])
        ax.tick_params(length=0, labelsize=8, top=True, labeltop=True, bottom=False, labelbottom=False)
        ax.set_ylabel("filter")
        ax.set_xlabel("input channel")
        ax.xaxis.set_label_position("top")
        for spine in ax.spines.values():
            spine.set_visible(False)
    cb = fig.colorbar(im, ax=ax, shrink=min(1.0, 4.0 / max(rows * CHANNEL_TILE, 1)), pad=0.02)
    cb.set_label("weight", fontsize=9)
    return fig


def plot_filters(model, layer: str | None = None, *, view: str = "auto", max_filters: int = 32,
                 max_channels: int = 16, weights: str = "best", path: str | Path | None = None):
    """Draw the filters of one convolution layer (default: the first).

    model: a run directory, a .safetensors file or a CNN. view: "rgb" (colour patches,
    only for 3 input channels), "channels" (a k x k grid per input channel) or "auto"
    (rgb for a layer that sees an RGB image). Saves a PNG when `path` is given; returns
    the matplotlib Figure.
    """
    loaded = load(model, weights)
    name, w = filter_weights(loaded.model, layer)
    if max_filters < 1 or max_channels < 1:
        raise CnnlabError("max_filters and max_channels must be at least 1")
    if view not in ("auto", "rgb", "channels"):
        raise CnnlabError(f"view must be auto, rgb or channels, got {view!r}")
    first = name == next(iter(conv_layers(loaded.model)))
    if view == "rgb" and w.shape[1] != 3:
        raise CnnlabError(f"layer {name!r} has {w.shape[1]} input channels, so its filters are not RGB "
                          "patches; use view 'channels'")
    rgb = view == "rgb" or (view == "auto" and first and w.shape[1] == 3)
    fig = _rgb_figure(name, w, max_filters) if rgb else _channel_figure(name, w, max_filters, max_channels)
    if path is not None:
        save_figure(fig, path)
    return fig
