"""Small, learnable images that tests make themselves (no downloads, no shared data).

Each class draws its own shape in a random colour, at a random place, on a noisy
background: "hbar" (horizontal bar), "vbar" (vertical bar), "square", "cross". A tiny CNN
tells them apart after a few epochs, so tests can train real models in seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SHAPES = ("hbar", "vbar", "square", "cross")


def draw(shape: str, size: tuple[int, int] = (32, 32), rng: np.random.Generator | None = None) -> np.ndarray:
    """One (H, W, 3) uint8 image of `shape`."""
    rng = rng or np.random.default_rng(0)
    h, w = size
    img = rng.integers(0, 60, (h, w, 3)).astype(np.uint8)
    colour = rng.integers(150, 256, 3).astype(np.uint8)
    t = max(2, min(h, w) // 8)  # stroke thickness
    cy = int(rng.integers(h // 4, h - h // 4))
    cx = int(rng.integers(w // 4, w - w // 4))
    half = min(h, w) // 4
    if shape == "hbar":
        img[max(0, cy - t // 2): cy + t // 2 + 1, max(0, cx - 2 * half): cx + 2 * half] = colour
    elif shape == "vbar":
        img[max(0, cy - 2 * half): cy + 2 * half, max(0, cx - t // 2): cx + t // 2 + 1] = colour
    elif shape == "square":
        img[max(0, cy - half): cy + half, max(0, cx - half): cx + half] = colour
    elif shape == "cross":
        img[max(0, cy - t // 2): cy + t // 2 + 1, max(0, cx - half): cx + half] = colour
        img[max(0, cy - half): cy + half, max(0, cx - t // 2): cx + t // 2 + 1] = colour
    else:
        raise ValueError(shape)
    return img


def make_image_folder(
    root: str | Path,
    classes: tuple[str, ...] = ("hbar", "vbar"),
    n: int = 12,
    size: tuple[int, int] = (32, 32),
    fmt: str = "png",
    seed: int = 0,
) -> Path:
    """Write root/<class>/<class>_<i>.<fmt>, `n` images per class; returns root."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for cls in classes:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(draw(cls, size, rng)).save(root / cls / f"{cls}_{i:03d}.{fmt}")
    return root


def make_split_folder(
    root: str | Path,
    classes: tuple[str, ...] = ("hbar", "vbar"),
    n: dict[str, int] | None = None,
    size: tuple[int, int] = (32, 32),
    fmt: str = "png",
    seed: int = 0,
) -> Path:
    """Write root/{train,val,test}/<class>/... (Keras/Kaggle layout); returns root."""
    n = n or {"train": 16, "val": 6, "test": 6}
    for i, (split, count) in enumerate(n.items()):
        make_image_folder(Path(root) / split, classes, count, size, fmt, seed + 1000 * i)
    return Path(root)
