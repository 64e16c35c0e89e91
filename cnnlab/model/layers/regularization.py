"""Regularisation while training: Dropout of values, SpatialDropout2D of whole channels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from cnnlab.model.layers.base import Layer, Shape, _rate, arg, register


@register
@dataclass
class Dropout(Layer):
    doc: ClassVar[str] = "Zeroes a random `rate` fraction of values while training."
    needs: ClassVar[str] = "any"
    rate: float = arg(_rate, "fraction of values dropped while training")
    name: str | None = None

    def build(self, shape: Shape) -> nn.Module:
        return nn.Dropout(self.rate)


@register
@dataclass
class SpatialDropout2D(Layer):
    doc: ClassVar[str] = "Drops whole channels (feature maps) at random while training."
    rate: float = arg(_rate, "fraction of channels dropped while training")
    name: str | None = None

    def build(self, shape: Shape) -> nn.Module:
        return nn.Dropout2d(self.rate)
