"""Image file -> the exact tensor a model was trained on, from the model's metadata alone.

A weights file's metadata (``input``, ``resize``, ``normalization``) says how its images were
read and scaled; :class:`Preprocessor` repeats that for new images (``predict``, ``explain``,
``export``'s sample images, the figures).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.data.decode import BadImage, load_image
from cnnlab.data.normalize import Normalization


@dataclass(frozen=True)
class Preprocessor:
    """Image file -> normalised float tensor (C, H, W), exactly as in training."""

    size: tuple[int, int]  # (height, width)
    channels: int
    resize: str
    normalization: Normalization

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> "Preprocessor":
        h, w, c = meta["input"]
        return cls((h, w), c, meta.get("resize", "stretch"),
                   Normalization.from_dict(meta.get("normalization"), c))

    def load_uint8(self, path: str | Path) -> np.ndarray:
        """(H, W, C) uint8; raises BadImage."""
        return load_image(path, self.size, self.channels, self.resize)

    def to_tensor(self, arr: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
        return self.normalization.apply(x)

    def load(self, path: str | Path) -> torch.Tensor:
        return self.to_tensor(self.load_uint8(path))

    def _try_load(self, path: str | Path) -> tuple[torch.Tensor | None, str]:
        try:
            return self.load(path), ""
        except BadImage as e:
            return None, e.reason

    def load_batch(self, paths: list[str | Path], pool=None) -> tuple[torch.Tensor, list[int], dict[int, str]]:
        """Stack the readable files: (tensor, indices of those files, {index: error}).

        ``pool``: a ``concurrent.futures`` executor decoding the files side by side (Pillow
        lets go of Python's lock while it decodes and resizes), in the files' order."""
        tensors, ok, errors = [], [], {}
        for i, (x, reason) in enumerate((pool.map if pool else map)(self._try_load, paths)):
            if x is None:
                errors[i] = reason
            else:
                tensors.append(x)
                ok.append(i)
        if not tensors:
            c, (h, w) = self.channels, self.size
            return torch.empty(0, c, h, w), ok, errors
        return torch.stack(tensors), ok, errors
