"""The kernels figure: a photo, each kernel with its numbers, and the feature map it gives.

Grey maps (kernels whose numbers add up to s > 0, such as blurs and sharpen) show values
from 0 (black) to s (white), the way an image viewer shows a photo. Kernels whose numbers
add up to 0 (edge detectors) answer 0 on flat regions and +/- on edges, so their maps use
red for positive, blue for negative and white for zero. Every map has its colour bar.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Iterable

import numpy as np

from cnnlab.io.figures import save_figure
from cnnlab.viz._figure import (
    TITLE_SIZE,
    colorbar,
    extend_for,
    hide_ticks,
    new_figure,
    show_image,
    symmetric_limit,
)
from cnnlab.viz.kernels import (
    DEFAULT_KERNELS,
    Kernel,
    apply_kernels,
    cross_correlate,
    get_kernels,
    output_size,
    pads,
    parse_padding,
    prepare_image,
    to_gray,
)

MAP_WIDTH = 3.4  # inches per feature map
KERNEL_WIDTH = 1.7  # inches per kernel matrix


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.3g}"


def draw_kernel(ax, kernel: Kernel, title: str | None = None) -> None:
    """The kernel as a grid of its numbers, cells tinted red (+) and blue (-)."""
    nums = np.asarray(kernel.numbers, dtype=np.float64)
    m = float(np.abs(nums).max()) or 1.0
    ax.imshow(nums, cmap="RdBu_r", vmin=-1.8 * m, vmax=1.8 * m)  # pale tints keep text legible
    kh, kw = nums.shape
    size = max(kh, kw)
    if size <= 11:
        fontsize = max(6, 15 - 1.2 * size)
        for (i, j), v in np.ndenumerate(nums):
            ax.text(j, i, _number(v), ha="center", va="center", fontsize=fontsize)
    ax.set_xticks(np.arange(-0.5, kw, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, kh, 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=2)
    ax.tick_params(which="both", length=0)
    hide_ticks(ax)
    ax.set_title(title or kernel.name)
    if kernel.scale_text():
        ax.set_xlabel(f"× {kernel.scale_text()}", fontsize=12)
    elif size > 11:
        ax.set_xlabel(f"{kh}×{kw} (numbers not shown)")


def draw_map(fig, ax, values: np.ndarray, kernel: Kernel, title: str, limit: float | None = None):
    """A feature map with a colour bar; `limit` fixes the +/- range of a signed map."""
    total = float(kernel.weights.sum())
    if total > 1e-9:
        cmap, vmin, vmax = "gray", 0.0, total
    else:
        v = limit or symmetric_limit(values, 99)
        cmap, vmin, vmax = "RdBu_r", -v, v
    interpolation = "nearest" if max(values.shape) <= 128 else "antialiased"
    im = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, interpolation=interpolation)
    colorbar(fig, im, ax, extend=extend_for(values, vmin, vmax))
    hide_ticks(ax)
    ax.set_title(title)
    return im


def _footnote(gray_shape: tuple[int, int], kernels: list[Kernel], stride: int, padding) -> str:
    h, k = gray_shape[0], kernels[0].shape[0]
    top, bottom = pads(gray_shape, kernels[0].shape, stride, padding)[2:]
    rows = output_size(h, k, stride, top, bottom)
    zeros = "no zero padding" if top + bottom == 0 else f"{top} + {bottom} rows of zeros"
    parts = [
        f"Each map is torch.nn.functional.conv2d(grey image, kernel, stride={stride}) with {zeros}: "
        "the kernel slides over the image; at every position the products of its numbers with the "
        "pixels under them are summed. Size along an axis: floor((n + padding - k) / stride) + 1, "
        f"here floor(({h} + {top + bottom} - {k}) / {stride}) + 1 = {rows} rows.",
        "PyTorch, Keras and TensorFlow compute this cross-correlation and call it convolution; "
        "mathematical convolution first rotates the kernel by 180°. Symmetric kernels give the "
        "same map either way; an asymmetric one does not (bottom row).",
        "Grey maps: 0 (black) to the sum of the kernel's numbers (white). Red/blue maps: positive/"
        "negative answers of kernels whose numbers sum to 0 (edge detectors); white is 0.",
    ]
    return "\n".join(textwrap.fill(p, 125) for p in parts)


def plot_kernels(image=None, kernels: str | Iterable[str | Kernel] = DEFAULT_KERNELS, stride: int = 1,
                 padding: str | int = "valid", size: int | None = 256, path: str | Path | None = None):
    """The photo, each kernel with its numbers, and the feature map it gives, in one figure.

    image: a path, an (H, W, 3) array, or None for scikit-learn's sample photo.
    kernels: built-in names and/or .yaml/.json files, as a list or "a,b,c".
    size: the photo's longest side in pixels before filtering (small kernels barely
    change a large photo); None keeps it. Saves a PNG when `path` is given.
    Returns the matplotlib Figure.
    """
    ks = get_kernels(kernels)
    padding = parse_padding(padding)
    rgb = prepare_image(image, size)
    gray = to_gray(rgb)
    maps = {name: m.numpy() for name, m in apply_kernels(gray, ks, stride, padding).items()}
    demo = next((k for k in ks if not k.symmetric), None)

    aspect = gray.shape[0] / gray.shape[1]
    row_h = max(KERNEL_WIDTH, MAP_WIDTH * aspect) + 0.8
    pair_rows = (len(ks) + 1) // 2
    heights = [row_h] * (1 + pair_rows + (demo is not None)) + [1.0]
    fig = new_figure(2 * (KERNEL_WIDTH + MAP_WIDTH + 0.6), sum(heights) + 0.5)
    gs = fig.add_gridspec(len(heights), 4, height_ratios=heights,
                          width_ratios=[KERNEL_WIDTH, MAP_WIDTH + 0.6] * 2)
    fig.suptitle(f"Kernels and their feature maps  (grey input {gray.shape[0]}×{gray.shape[1]}, "
                 f"stride {stride}, padding {padding})", fontsize=TITLE_SIZE + 2, fontweight="bold")

    show_image(fig.add_subplot(gs[0, 0:2]), rgb / 255.0, f"photo {rgb.shape[0]}×{rgb.shape[1]}")
    ax = fig.add_subplot(gs[0, 2:4])
    show_image(ax, gray, f"grey input {gray.shape[0]}×{gray.shape[1]} (what each kernel sees)")

    for i, k in enumerate(ks):
        row, col = 1 + i // 2, 2 * (i % 2)
        draw_kernel(fig.add_subplot(gs[row, col]), k)
        m = maps[k.name]
        draw_map(fig, fig.add_subplot(gs[row, col + 1]), m, k, f"{k.name} → {m.shape[0]}×{m.shape[1]}")

    if demo is not None:
        row = 1 + pair_rows
        corr = maps[demo.name]
        conv = cross_correlate(gray, demo.flipped(), stride, padding).numpy()
        limit = symmetric_limit(np.concatenate([corr.ravel(), conv.ravel()]), 99)
        draw_kernel(fig.add_subplot(gs[row, 0]), demo, f"{demo.name}\nas written")
        draw_map(fig, fig.add_subplot(gs[row, 1]), corr, demo,
                 "cross-correlation\n(what PyTorch and Keras compute)", limit)
        draw_kernel(fig.add_subplot(gs[row, 2]), demo.flipped(), f"{demo.name}\nrotated 180°")
        draw_map(fig, fig.add_subplot(gs[row, 3]), conv, demo,
                 "convolution (the maths definition)\n= cross-correlation with the rotated kernel", limit)

    note = fig.add_subplot(gs[-1, :])
    note.axis("off")
    note.text(0, 1, _footnote(gray.shape, ks, stride, padding), va="top", ha="left", fontsize=10,
              transform=note.transAxes, wrap=False)
    if path is not None:
        save_figure(fig, path)
    return fig
