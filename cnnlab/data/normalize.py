"""Normalisation: uint8 pixels -> the floats the network sees.

``x = (pixel / 255 - mean) / std`` per channel. ``rescale`` is Keras' ``rescale=1./255``
(mean 0, std 1); ``measured`` uses the per-channel mean and std of the training split.
The values are saved in every weights file so that prediction sees what training saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cnnlab.data.loader import ImageLoader, make_loader


@dataclass(frozen=True)
class Normalization:
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def rescale(cls, channels: int = 3) -> "Normalization":
        return cls((0.0,) * channels, (1.0,) * channels)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, channels: int = 3) -> "Normalization":
        if not d:
            return cls.rescale(channels)
        return cls(tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]))

    def to_dict(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std)}

    def apply(self, x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(N, C, H, W) or (C, H, W) -> normalised floats, on x's device.

        uint8 input is pixels (0..255); float input is taken as already in [0, 1] (the
        output of augmentation).
        """
        shape = (-1, 1, 1)
        mean = torch.tensor(self.mean, dtype=dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=dtype, device=x.device).view(shape)
        x01 = x.to(dtype) / 255.0 if x.dtype == torch.uint8 else x.to(dtype)
        return (x01 - mean) / std

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised floats -> values in [0, 1] for display."""
        shape = (-1, 1, 1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return (x * std + mean).clamp(0, 1)


def compute_mean_std(loader_or_items, *, size=None, channels: int = 3, resize: str = "stretch",
                     cache_dir=None, workers: int = 0, max_images: int | None = None) -> Normalization:
    """Per-channel mean and std of the training images, in [0, 1] units.

    Pass the training :class:`~cnnlab.data.loader.ImageLoader` (its decoded pixels are read
    directly), or [(path, label)] items with ``size`` (they are decoded through the cache).
    ``max_images`` uses an evenly spaced subset. Sums run in float64 chunk by chunk, so
    memory stays small and the result does not depend on the batch size (nor on the size of
    the data set: 256 images at a time, read from the cache file).
    """
    loader = loader_or_items
    if not isinstance(loader, ImageLoader):
        if size is None:
            raise ValueError("compute_mean_std needs size=(height, width) when given file items")
        loader = make_loader(loader_or_items, size=size, channels=channels, resize=resize,
                             cache_dir=cache_dir, workers=workers)
    rows = loader.rows
    if max_images is not None and len(rows) > max_images:
        rows = rows[torch.linspace(0, len(rows) - 1, max_images).long().numpy()]
    rows = np.sort(rows)  # read in file order: the sums do not depend on it
    c = loader.images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    squares = torch.zeros(c, dtype=torch.float64)
    pixels = 0
    for start in range(0, len(rows), 256):
        chunk = torch.from_numpy(loader.read(rows[start:start + 256])).to(torch.float64) / 255.0
        total += chunk.sum(dim=(0, 2, 3))
        squares += (chunk * chunk).sum(dim=(0, 2, 3))
        pixels += chunk.shape[0] * chunk.shape[2] * chunk.shape[3]
    if pixels == 0:
        raise ValueError("compute_mean_std: there are no readable training images")
    mean = total / pixels
    std = (squares / pixels - mean * mean).clamp(min=0).sqrt().clamp(min=1e-3)
    return Normalization(tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std))


def class_weights(labels, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights for the loss, scaled to mean 1 over the classes present.

    A class with half as many images weighs twice as much; a class with no images gets 0.
    Use as ``nn.CrossEntropyLoss(weight=class_weights(train_labels, len(classes)))``.
    """
    counts = torch.bincount(torch.as_tensor(labels, dtype=torch.long).flatten(), minlength=num_classes)
    counts = counts[:num_classes].to(torch.float32)
    present = counts > 0
    if not present.any():
        return torch.ones(num_classes)
    w = torch.where(present, 1.0 / counts.clamp(min=1), torch.zeros_like(counts))
    return w * (present.sum() / w.sum())
