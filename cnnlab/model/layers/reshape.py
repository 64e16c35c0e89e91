"""Reshaping: ZeroPadding2D around the image, Flatten into one vector."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.model.layers.base import Layer, Shape, _zero_padding, arg, register


class ZeroPad(nn.Module):
    def __init__(self, pad: tuple[int, int, int, int]):
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.pad)


class FlattenModule(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


@register
@dataclass
class ZeroPadding2D(Layer):
    doc: ClassVar[str] = "Adds rows and columns of zeros around the image."
    padding: tuple = arg(_zero_padding, "rows (top and bottom) and columns (left and right): 1, "
                                        "[1, 2], or [[top, bottom], [left, right]]", (1, 1))
    name: str | None = None

    def _pads(self) -> tuple[int, int, int, int]:
        """(top, bottom, left, right)."""
        (t, b), (l, r) = [(p, p) if isinstance(p, int) else p for p in self.padding]
        return t, b, l, r

    def output_shape(self, shape: Shape) -> Shape:
        t, b, l, r = self._pads()
        return (shape[0] + t + b, shape[1] + l + r, shape[2])

    def build(self, shape: Shape) -> nn.Module:
        t, b, l, r = self._pads()
        return ZeroPad((l, r, t, b))


@register
@dataclass
class Flatten(Layer):
    doc: ClassVar[str] = "Turns (H, W, C) into one vector of H*W*C values."
    needs: ClassVar[str] = "any"
    name: str | None = None

    def output_shape(self, shape: Shape) -> Shape:
        return (math.prod(shape),)

    def build(self, shape: Shape) -> nn.Module:
        return FlattenModule()
