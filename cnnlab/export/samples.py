"""The images an export is checked on: the run's own (test split first), else random pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnlab.data.decode import BadImage
from cnnlab.run import Opened


def sample_paths(source: Opened, n: int) -> list[str]:
    """Up to ``n`` of the run's own images (test split first) to check the export with."""
    for name in ("test", "val", "train"):
        items = [p for p, _ in (source.split().get(name) or []) if Path(p).is_file()]
        if items:
            step = max(1, len(items) // n)
            return items[::step][:n]
    return []


def sample_images(source, n: int = 8) -> np.ndarray:
    """Up to n (H, W, C) uint8 images for the parity check: the run's own, else random pixels."""
    h, w, c = source.model.spec.input
    arrays = []
    for path in sample_paths(source, n):
        try:
            arrays.append(source.preprocessor().load_uint8(path))
        except BadImage:
            continue
    rng = np.random.default_rng(0)
    while len(arrays) < n:
        arrays.append(rng.integers(0, 256, (h, w, c), dtype=np.uint8))
    return np.stack(arrays)
