"""Pooling: MaxPooling2D and AveragePooling2D over windows, their Global forms over the image,
and BlurPool2D (anti-aliased downsampling)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import SpecError
from cnnlab.model.layers.base import (Layer, ParamGroup, Shape, _choice, _pad_spec, _pair, _positive_int, arg, conv_out,
                                      register, same_pads)


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


# ---------------------------------------------------------------------------------------
# Anti-aliased downsampling (Zhang, "Making Convolutional Networks Shift-Invariant Again",
# ICML 2019): blur with a fixed binomial filter, then keep every `strides`-th pixel.
# ---------------------------------------------------------------------------------------

BINOMIAL = {2: (1, 1), 3: (1, 2, 1), 4: (1, 3, 3, 1), 5: (1, 4, 6, 4, 1)}  # rows of Pascal's triangle


def binomial_filter(size: int) -> torch.Tensor:
    """The (size, size) blur: the outer product of a binomial row with itself, summing to 1."""
    row = torch.tensor(BINOMIAL[size], dtype=torch.float64)
    k = torch.outer(row, row)
    return (k / k.sum()).float()


class BlurPoolModule(nn.Module):
    """A depthwise convolution with a fixed filter (a buffer, not a weight) after padding."""

    def __init__(self, size: int, channels: int, stride: int, pad: tuple[int, int, int, int], mode: str):
        super().__init__()
        self.stride, self.pad, self.mode, self.channels = stride, pad, mode, channels
        self.register_buffer("weight", binomial_filter(size).expand(channels, 1, size, size).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pad):
            x = F.pad(x, self.pad, mode="constant" if self.mode == "same" else "reflect")
        return F.conv2d(x, self.weight.to(x.dtype), stride=self.stride, groups=self.channels)


@register
@dataclass
class BlurPool2D(Layer):
    doc: ClassVar[str] = ("Anti-aliased downsampling (Zhang 2019): a fixed binomial blur, then every "
                          "`strides`-th pixel; after a MaxPooling2D with strides 1 it is MaxBlurPool")
    filter_size: int = arg(_choice(2, 3, 4, 5), "width of the binomial filter: 3 is [1, 2, 1] / 4 in each direction",
                           3)
    strides: int = arg(_positive_int, "step: 2 halves the height and width", 2)
    padding: str = arg(_choice("same", "reflect"),
                       "same: zeros at the borders as Keras' 'same' (exported to Keras as a frozen "
                       "DepthwiseConv2D); reflect: the mirrored border, as Zhang's code (ONNX only)", "same")
    name: str | None = None

    def output_shape(self, shape: Shape) -> Shape:
        h, w, c = shape
        return (math.ceil(h / self.strides), math.ceil(w / self.strides), c)

    def params(self, shape: Shape) -> list[ParamGroup]:
        # a fixed filter per channel: Keras counts a frozen DepthwiseConv2D's kernel as non-trainable
        k, c = self.filter_size, shape[-1]
        return [ParamGroup("fixed blur", f"{k}*{k}*{c}", k * k * c, False)]

    def macs(self, shape: Shape, out: Shape) -> int:
        return out[0] * out[1] * out[2] * self.filter_size ** 2

    def rf(self) -> tuple[int, int]:
        return self.filter_size, self.strides

    def build(self, shape: Shape) -> nn.Module:
        top, bottom = same_pads(shape[0], self.filter_size, self.strides)
        left, right = same_pads(shape[1], self.filter_size, self.strides)
        if self.padding == "reflect" and (max(top, bottom) >= shape[0] or max(left, right) >= shape[1]):
            raise SpecError(f"its {self.filter_size}x{self.filter_size} filter is too wide to reflect at the "
                            f"border of a {shape[0]}x{shape[1]} input")
        return BlurPoolModule(self.filter_size, shape[2], self.strides, (left, right, top, bottom), self.padding)
