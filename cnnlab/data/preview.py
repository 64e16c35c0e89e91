"""A grid of augmented training samples: see what the network will see before training.

Each row is one image: first as decoded and resized, then ``copies`` random augmentations
of it. Rows go round the classes, so every class shows up.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cnnlab.data.augment import Augmenter, parse_augment
from cnnlab.data.datasets import DataIndex
from cnnlab.data.decode import BadImage, load_image
from cnnlab.errors import CnnlabError, DataError
from cnnlab.io.figures import check_output, save_figure


def pick_samples(index: DataIndex, split: str, n: int, seed: int = 0) -> list[tuple[str, int]]:
    """Up to n (path, label) items, taken in turn from each class in a seeded random order."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[tuple[str, int]]] = {}
    for item in index.splits.get(split, []):
        by_class.setdefault(item[1], []).append(item)
    queues = [[items[i] for i in rng.permutation(len(items))] for _, items in sorted(by_class.items())]
    picked: list[tuple[str, int]] = []
    while len(picked) < n and any(queues):
        for q in queues:
            if q and len(picked) < n:
                picked.append(q.pop(0))
    return picked


def preview_grid(
    index: DataIndex,
    out: str | Path,
    augment: str | dict | None = "standard",
    size: tuple[int, int] = (128, 128),
    channels: int = 3,
    resize: str = "stretch",
    samples: int = 6,
    copies: int = 5,
    split: str = "train",
    seed: int = 0,
) -> Path:
    """Write the grid to ``out`` (PNG, JPEG, SVG or PDF, from the suffix); return the path."""
    from matplotlib.figure import Figure

    if samples < 1 or copies < 0:
        raise CnnlabError(f"--samples must be at least 1 and --copies at least 0, got {samples} and {copies}")
    check_output(out)
    augmenter = Augmenter(parse_augment(augment))
    images, labels = [], []
    for path, label in pick_samples(index, split, samples * 3, seed):  # spares for bad files
        try:
            images.append(load_image(path, size, channels, resize))
            labels.append(label)
        except BadImage:
            continue
        if len(images) == samples:
            break
    if not images:
        raise DataError(f"{index.root}: no readable images in the {split} split to preview")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    g = torch.Generator().manual_seed(seed)
    augmented = [augmenter(x, g) for _ in range(copies)]  # each call draws new transforms
    rows, cols = len(images), copies + 1
    fig = Figure(figsize=(1.6 * cols, 1.6 * rows + 0.5), layout="tight")
    axes = fig.subplots(rows, cols, squeeze=False)
    for r in range(rows):
        for c in range(cols):
            img = (x if c == 0 else augmented[c - 1])[r].permute(1, 2, 0).numpy()
            ax = axes[r][c]
            ax.imshow(img[..., 0] if channels == 1 else img, cmap="gray" if channels == 1 else None,
                      vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("original" if c == 0 else f"augmented {c}", fontsize=8)
        axes[r][0].set_ylabel(index.classes[labels[r]], fontsize=8)
    fig.suptitle(f"augment: {augmenter.config.describe()}", fontsize=8, wrap=True)
    return save_figure(fig, out, dpi=100)
