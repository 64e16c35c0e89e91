"""Normalisation: uint8 pixels -> the floats the network sees.

``x = (pixel / 255 - mean) / std`` per channel. ``rescale`` is Keras' ``rescale=1./255``
(mean 0, std 1); ``measured`` uses the per-channel mean and std of the training split.
The values are saved in every weights file so that prediction sees what training saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


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
