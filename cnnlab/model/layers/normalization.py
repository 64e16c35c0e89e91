"""Per-channel scale and shift: BatchNormalization, and Keras' preprocessing layers Rescaling and
Normalization (what `cnnlab.formats.keras` maps a Keras model's input scaling onto).

BatchNormalization has Keras' 4*C parameters (2*C trainable, 2*C non-trainable).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from cnnlab.errors import SpecError
from cnnlab.model.layers.base import (Layer, ParamGroup, Shape, _bool, _number_or_list, _positive_float, _rate, arg,
                                      register)


@register
@dataclass
class BatchNormalization(Layer):
    doc: ClassVar[str] = "Normalises each channel with batch statistics; learns a scale and a shift."
    needs: ClassVar[str] = "any"
    momentum: float = arg(_rate, "Keras momentum of the moving averages (0.99 = slow)", 0.99)
    epsilon: float = arg(_positive_float, "added to the variance", 0.001)
    scale: bool = arg(_bool, "learn a scale γ; false: γ stays 1 (Keras' scale=False; airbench)", True)
    name: str | None = None

    def params(self, shape: Shape) -> list[ParamGroup]:
        c = shape[-1]
        learned = ParamGroup("γ,β", f"2*{c}", 2 * c, True) if self.scale else ParamGroup("β", f"{c}", c, True)
        return [learned, ParamGroup("moving μ,σ²", f"2*{c}", 2 * c, False)]

    def build(self, shape: Shape) -> nn.Module:
        # Keras' momentum weighs the old average; torch's weighs the new batch.
        cls = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
        bn = cls(shape[-1], eps=self.epsilon, momentum=1.0 - self.momentum)
        if not self.scale:
            # γ is a constant 1, not a parameter: nothing can train it, and (a non-persistent
            # buffer) the weights file holds 3*C values, as Keras' BatchNormalization(scale=False).
            # Not weight=None: torch's channels-last CUDA backward (batch_norm_backward_reduce,
            # Normalization.cuh) then gives β an empty gradient ("NativeBatchNormBackward0
            # returned an invalid gradient at index 2": torch 2.11 on an H200, benchmarks/log/2026-12-04.md).
            del bn.weight
            bn.register_buffer("weight", torch.ones(shape[-1]), persistent=False)
        return bn


def _channel_values(v: float | tuple[float, ...], c: int, what: str) -> torch.Tensor:
    """A number or per-channel list as a (C, 1, 1) tensor (or (C,) for flat inputs)."""
    if isinstance(v, tuple) and len(v) not in (1, c):
        raise SpecError(f"its {what} has {len(v)} values but the input has {c} channels")
    return torch.tensor(v if isinstance(v, tuple) else (v,), dtype=torch.float32)


class Affine(nn.Module):
    """x * scale + offset per channel (Rescaling), or (x - mean) / std (Normalization)."""

    def __init__(self, scale: torch.Tensor, offset: torch.Tensor, image: bool):
        super().__init__()
        shape = (1, -1, 1, 1) if image else (1, -1)
        self.register_buffer("scale", scale.reshape(shape), persistent=False)
        self.register_buffer("offset", offset.reshape(shape), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.offset


@register
@dataclass
class Rescaling(Layer):
    doc: ClassVar[str] = "x * scale + offset: Keras' Rescaling(1./255) turns pixels 0-255 into 0-1."
    needs: ClassVar[str] = "any"
    scale: float | tuple[float, ...] = arg(_number_or_list, "factor (or one per channel)")
    offset: float | tuple[float, ...] = arg(_number_or_list, "added after scaling (or one per channel)", 0.0)
    name: str | None = None

    def output_shape(self, shape: Shape) -> Shape:
        _channel_values(self.scale, shape[-1], "scale")
        _channel_values(self.offset, shape[-1], "offset")
        return shape

    def build(self, shape: Shape) -> nn.Module:
        c = shape[-1]
        return Affine(_channel_values(self.scale, c, "scale"), _channel_values(self.offset, c, "offset"),
                      len(shape) == 3)


@register
@dataclass
class Normalization(Layer):
    doc: ClassVar[str] = ("(x - mean) / sqrt(variance) per channel, with Keras' statistics "
                          "(the values its adapt() measured).")
    needs: ClassVar[str] = "any"
    mean: float | tuple[float, ...] = arg(_number_or_list, "mean of each channel")
    variance: float | tuple[float, ...] = arg(_number_or_list, "variance of each channel")
    stored: bool = arg(_bool, "Keras keeps mean, variance and count as weights (adapt()): 2*C+1 "
                              "non-trainable parameters in its summary", False)
    name: str | None = None

    def output_shape(self, shape: Shape) -> Shape:
        _channel_values(self.mean, shape[-1], "mean")
        _channel_values(self.variance, shape[-1], "variance")
        return shape

    def params(self, shape: Shape) -> list[ParamGroup]:
        if not self.stored:
            return []
        c = shape[-1]
        return [ParamGroup("mean,variance,count", f"2*{c}+1", 2 * c + 1, False)]

    def build(self, shape: Shape) -> nn.Module:
        c = shape[-1]
        mean = _channel_values(self.mean, c, "mean")
        # Keras 3: (x - mean) / maximum(sqrt(variance), epsilon), epsilon = 1e-7.
        std = _channel_values(self.variance, c, "variance").sqrt().clamp(min=1e-7)
        return Affine(1.0 / std, -mean / std, len(shape) == 3)
