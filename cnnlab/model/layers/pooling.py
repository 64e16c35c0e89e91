"""Pooling: MaxPooling2D and AveragePooling2D over windows, their Global forms over the image."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import SpecError
from cnnlab.model.layers.base import Layer, Shape, _choice, _pad_spec, _pair, arg, conv_out, register


class KerasPool(nn.Module):
    def __init__(self, kind: str, k, s, padding: tuple | None, sym: tuple[int, int]):
        super().__init__()
        self.kind, self.k, self.s, self.pad, self.sym = kind, k, s, padding, sym

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "max":
            if self.pad is not None:
                x = F.pad(x, self.pad, value=float("-inf"))
            return F.max_pool2d(x, self.k, self.s, padding=self.sym)
        if self.pad is None:
            # TensorFlow averages over the real pixels only, not the padding.
            return F.avg_pool2d(x, self.k, self.s, padding=self.sym, count_include_pad=False)
        ones = torch.ones_like(x[:1, :1])
        total = F.avg_pool2d(F.pad(x, self.pad), self.k, self.s, divisor_override=1)
        count = F.avg_pool2d(F.pad(ones, self.pad), self.k, self.s, divisor_override=1)
        return total / count


class GlobalPool(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(2, 3)) if self.kind == "max" else x.mean(dim=(2, 3))


@dataclass
class _Pool(Layer):
    kind: ClassVar[str] = "max"
    pool_size: tuple[int, int] = arg(_pair, "window height and width", (2, 2))
    strides: tuple[int, int] | None = arg(
        lambda v: None if v is None else _pair(v), "step; defaults to pool_size", None
    )
    padding: str = arg(_choice("valid", "same"), "valid or same", "valid")
    name: str | None = None

    @property
    def _strides(self) -> tuple[int, int]:
        return self.strides or self.pool_size

    def output_shape(self, shape: Shape) -> Shape:
        h, w, c = shape
        (ph, pw), (sh, sw) = self.pool_size, self._strides
        oh, ow = conv_out(h, ph, sh, self.padding), conv_out(w, pw, sw, self.padding)
        if oh < 1 or ow < 1:
            raise SpecError(f"its {ph}x{pw} pool window is larger than its {h}x{w} input")
        return (oh, ow, c)

    def rf(self) -> tuple[int, int]:
        return self.pool_size[0], self._strides[0]

    def build(self, shape: Shape) -> nn.Module:
        sym, pad = (0, 0), None
        if self.padding == "same":
            sym, pad = _pad_spec(shape, self.pool_size, self._strides, (1, 1))
        return KerasPool(self.kind, self.pool_size, self._strides, pad, sym)


@register
@dataclass
class MaxPooling2D(_Pool):
    doc: ClassVar[str] = "Keeps the largest value of each pool_size window."
    kind: ClassVar[str] = "max"


@register
@dataclass
class AveragePooling2D(_Pool):
    doc: ClassVar[str] = "Averages each pool_size window."
    kind: ClassVar[str] = "avg"


@dataclass
class _GlobalPool(Layer):
    kind: ClassVar[str] = "avg"
    name: str | None = None

    def output_shape(self, shape: Shape) -> Shape:
        return (shape[2],)

    def rf(self) -> tuple[int, int]:
        return 0, 1  # sees the whole image; handled by the summary

    def build(self, shape: Shape) -> nn.Module:
        return GlobalPool(self.kind)


@register
@dataclass
class GlobalAveragePooling2D(_GlobalPool):
    doc: ClassVar[str] = "Averages each channel over the whole image: (H, W, C) -> (C,)."
    kind: ClassVar[str] = "avg"


@register
@dataclass
class GlobalMaxPooling2D(_GlobalPool):
    doc: ClassVar[str] = "Largest value of each channel over the image: (H, W, C) -> (C,)."
    kind: ClassVar[str] = "max"
