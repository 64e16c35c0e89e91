"""Feature maps: what each conv and pool layer outputs for one image.

A layer with C output channels produces C feature maps, one per filter: where the map is
bright, the filter found its pattern. Early layers answer to edges and colours at full
resolution; after each pooling the maps get coarser and more abstract. Each layer is drawn
as a block of tiles (one per channel, on one colour scale for the whole layer so channels
can be compared), titled with the layer name and its output shape as the summary prints it.

    >>> from cnnlab.viz import feature_maps, plot_featuremaps
    >>> maps = feature_maps("runs/cats", "cat.jpg")          # {layer: (C, H, W) tensor}
    >>> fig = plot_featuremaps("runs/cats", "cat.jpg", path="maps.png")
"""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import matplotlib
import numpy as np
import torch

from cnnlab.errors import CnnlabError
from cnnlab.io.figures import save_figure
from cnnlab.viz._figure import (
    DPI,
    TITLE_SIZE,
    extend_for,
    grid_shape,
    image_to_display,
    mosaic,
    new_figure,
    show_image,
)
from cnnlab.viz._inputs import load
from cnnlab.viz._model import pick_spatial

TILE = 1.05  # inches per feature-map tile
COLS = 8


def _keras_shape(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


@torch.no_grad()
def feature_maps(model, image, layers: list[str] | None = None,
                 weights: str = "best") -> "OrderedDict[str, torch.Tensor]":
    """{layer name: its output (C, H, W)} for one image; default layers: every conv and pool.

    model: a run directory, a .safetensors file or a CNN; image: a file or a
    preprocessed (C, H, W) tensor.
    """
    loaded = load(model, weights)
    x, _ = loaded.image(image)
    chosen = [t.name for t in pick_spatial(loaded.model, layers)]
    outputs = loaded.model.features(x[None])
    return OrderedDict((name, outputs[name][0]) for name in chosen)


def tile_gap(h: int, w: int) -> tuple[int, int]:
    """Empty pixels between tiles: room above each tile for its channel number."""
    return max(1, math.ceil(0.22 * h)), max(1, math.ceil(0.06 * w))


def _draw_layer(sf, name: str, kind: str, maps: np.ndarray, keras_shape, max_channels: int) -> None:
    c, h, w = maps.shape
    n = min(c, max_channels)
    lo, hi = float(maps.min()), float(maps.max())
    if lo < 0:  # signed values (no ReLU yet): zero in the middle of a red/blue scale
        v = max(-lo, hi) or 1.0
        cmap, vmin, vmax = "RdBu_r", -v, v
    else:
        cmap, vmin, vmax = "viridis", 0.0, hi or 1.0
    shown = f"; first {n} of {c} channels" if n < c else ""
    sf.suptitle(f"{name} ({kind})  output {_keras_shape(keras_shape)}{shown}", fontsize=TITLE_SIZE,
                fontweight="bold", x=0.02, ha="left")
    gy, gx = tile_gap(h, w)
    image, origins = mosaic(maps[:n], COLS, (gy, gx))
    ax = sf.subplots(1, 1)
    cm = matplotlib.colormaps[cmap].with_extremes(bad="white")
    big = image.shape[1] > COLS * TILE * DPI  # more pixels than the screen shows: smooth them
    im = ax.imshow(image, cmap=cm, vmin=vmin, vmax=vmax, interpolation="antialiased" if big else "nearest")
    ax.set_ylim(image.shape[0] - 0.5, -gy - 0.5)  # room above the first row for its numbers
    for i, (y, x) in enumerate(origins):
        ax.text(x - 0.5, y - 0.5, f"{i}", fontsize=7, ha="left", va="bottom")
    ax.axis("off")
    cb = sf.colorbar(im, ax=ax, shrink=0.9, pad=0.01, extend=extend_for(maps[:n], vmin, vmax))
    cb.ax.tick_params(labelsize=8)


def plot_featuremaps(model, image, layers: list[str] | None = None, *, max_channels: int = 32,
                     weights: str = "best", path: str | Path | None = None):
    """The input image, then every chosen layer's feature maps, one tile per channel.

    Layers default to every conv and pool layer; at most `max_channels` tiles per layer
    (8 per row, so large layers get more rows rather than smaller tiles). Saves a PNG
    when `path` is given; returns the matplotlib Figure.
    """
    if max_channels < 1:
        raise CnnlabError("max_channels must be at least 1")
    loaded = load(model, weights)
    x, label = loaded.image(image)
    chosen = pick_spatial(loaded.model, layers)
    with torch.no_grad():
        outputs = loaded.model.features(x[None])
        probs = loaded.model.probabilities(next(reversed(outputs.values())))[0]
    top = int(probs.argmax())

    blocks = [grid_shape(min(t.output_shape[2], max_channels), COLS)[0] for t in chosen]
    heights = [2.6] + [r * (TILE + 0.2) + 0.55 for r in blocks]
    fig = new_figure(COLS * TILE + 1.2, sum(heights) + 0.6)
    fig.suptitle(f"Feature maps of {loaded.name} for {label}: predicted "
                 f"{loaded.classes[top]!r} (p = {float(probs[top]):.2f})",
                 fontsize=TITLE_SIZE + 2, fontweight="bold")
    subfigs = fig.subfigures(len(heights), 1, height_ratios=heights)

    h, w, c = loaded.model.input_shape
    head = subfigs[0]
    ax = head.subplots(1, 1)
    show_image(ax, image_to_display(x, loaded.normalization))
    head.suptitle(f"input {_keras_shape((h, w, c))}", fontsize=TITLE_SIZE, fontweight="bold", x=0.02, ha="left")
    for sf, t in zip(subfigs[1:], chosen):
        maps = outputs[t.name][0].float().cpu().numpy()
        _draw_layer(sf, t.name, t.type, maps, t.output_shape, max_channels)
    if path is not None:
        save_figure(fig, path)
    return fig
