"""The evaluation's pictures: confusion matrices, top losses, training curves.

Matplotlib's object API (``Figure``, no pyplot) draws off-screen, so nothing here needs
a display or touches global state. Each ``*_figure`` function returns a Figure;
cnnlab.io.figures.save_figure writes it (atomically, no text cut off).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

RED, GREEN, GREY = "#c0392b", "#1e8449", "#555555"


def confusion_matrix_figure(cm: Sequence[Sequence[float]], classes: Sequence[str],
                            normalized: bool = False, title: str | None = None) -> Figure:
    """Rows: true class, columns: predicted class; the diagonal is the correct predictions."""
    cm = np.asarray(cm, dtype=np.float64)
    n = len(classes)
    side = min(16.0, max(3.6, 0.55 * n + 2.2))
    fig = Figure(figsize=(side + 0.9, side), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1 if normalized else max(1.0, cm.max()))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    slanted = max(map(len, classes)) > 3  # long names are written at an angle
    ax.set_xticks(range(n), labels=classes, rotation=45 if slanted else 0,
                  ha="right" if slanted else "center", rotation_mode="anchor")
    ax.set_yticks(range(n), labels=classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    # Over the whole figure, not the matrix: long class names push the matrix to the right,
    # and a title centred on it would run off the canvas.
    fig.suptitle(title or ("Confusion matrix (each row sums to 1)" if normalized else "Confusion matrix (counts)"))
    if n <= 30:  # write the numbers in the cells while they still fit
        size = 10 if n <= 10 else max(5, 12 - n // 4)
        threshold = (1 if normalized else cm.max()) / 2
        for i in range(n):
            for j in range(n):
                text = f"{cm[i, j]:.2f}" if normalized else f"{int(cm[i, j])}"
                ax.text(j, i, text, ha="center", va="center", fontsize=size,
                        color="white" if cm[i, j] > threshold else "black")
    return fig


def top_losses_figure(items: Sequence[dict[str, Any]], images: Sequence[np.ndarray | None],
                      title: str = "Top losses") -> Figure:
    """A grid of images with "true / predicted (confidence) / loss" above each.

    ``items`` are dicts with ``true``, ``predicted``, ``confidence`` and ``loss``;
    ``images[i]`` is the (H, W, C) uint8 picture the model saw (None if it is gone).
    """
    n = max(1, len(items))
    cols = min(4, n)
    rows = math.ceil(n / cols)
    # Fixed margins in inches (a layout engine costs more time than all the drawing):
    # a 2.4" image with a 0.65" three-line title above it, and 0.45" for the figure's title.
    height = rows * (2.4 + 0.65) + 0.45
    fig = Figure(figsize=(2.55 * cols, height))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - (0.45 + 0.65) / height,
                        wspace=0.06, hspace=0.65 / 2.4)
    for ax in axes:
        ax.set_axis_off()
    if not items:
        axes[0].text(0.5, 0.5, "no images", ha="center", va="center", color=GREY)
    for ax, item, img in zip(axes, items, images):
        if img is not None:
            ax.imshow(img[:, :, 0] if img.shape[2] == 1 else img, cmap="gray" if img.shape[2] == 1 else None,
                      vmin=0, vmax=255)
        wrong = item["true"] != item["predicted"]
        ax.set_title(f"true: {item['true']}\npred: {item['predicted']} ({item['confidence']:.0%})\n"
                     f"loss {item['loss']:.2f}", fontsize=9, color=RED if wrong else GREEN)
    fig.suptitle(title, fontsize=12, y=1 - 0.12 / height, va="top")
    return fig


def _column(history: list[dict[str, float]], key: str) -> np.ndarray:
    return np.array([row.get(key, float("nan")) for row in history], dtype=np.float64)


def curves_figure(history: list[dict[str, float]], best_epoch: int | None = None) -> Figure:
    """Loss and accuracy (train vs validation) per epoch, and the learning rate.

    ``history`` is history.csv as rows of floats; columns named ``*loss`` go in the first
    panel, ``*acc*`` in the second, ``lr`` in the third. A dashed line marks ``best_epoch``.
    """
    keys = list(history[0]) if history else []
    epochs = _column(history, "epoch") if "epoch" in keys else np.arange(1, len(history) + 1)
    panels = [("loss", [k for k in keys if k.endswith("loss")]),
              ("accuracy", [k for k in keys if "acc" in k]),
              ("learning rate", [k for k in keys if k == "lr"])]
    panels = [(name, cols) for name, cols in panels if cols]
    fig = Figure(figsize=(4.6 * max(1, len(panels)), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(1, len(panels))))
    for ax, (name, cols) in zip(axes, panels):
        for col in cols:
            style = "--" if col.startswith("val") else "-"
            label = col.replace("_", " ")
            ax.plot(epochs, _column(history, col), style, marker="o", markersize=3, label=label)
        if best_epoch is not None:
            ax.axvline(best_epoch, color=GREY, linestyle=":", linewidth=1, label=f"best (epoch {best_epoch})")
        if name == "learning rate":
            lr = _column(history, "lr")
            positive = lr[lr > 0]
            if positive.size and positive.max() / positive.min() > 20:  # schedules spanning decades
                ax.set_yscale("log")
            else:
                ax.set_ylim(bottom=0, top=max(float(np.nanmax(lr)) * 1.15, 1e-12))
        if name == "accuracy":
            ax.set_ylim(-0.02, 1.02)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if not panels:
        axes[0].axis("off")
        axes[0].text(0.5, 0.5, "no training history", ha="center", va="center", color=GREY)
    return fig
