"""Dense: the fully connected layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from cnnlab.model.layers.base import (Layer, ParamGroup, Shape, _activation, _bool, _units, arg, make_activation,
                                      register)


class Dense2d(nn.Module):
    def __init__(self, lin: nn.Linear, activation: str | None):
        super().__init__()
        self.linear = lin
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.linear(x))


@register
@dataclass
class Dense(Layer):
    doc: ClassVar[str] = "Fully connected: every input connects to every one of `units` outputs."
    needs: ClassVar[str] = "flat"
    units: int | str = arg(_units, "number of outputs; 'classes' takes it from the data")
    activation: str | None = arg(_activation, "activation applied to the output", None)
    use_bias: bool = arg(_bool, "add one bias per unit", True)
    name: str | None = None

    def output_shape(self, shape: Shape) -> Shape:
        assert isinstance(self.units, int), "units must be resolved before shapes"
        return (self.units,)

    def params(self, shape: Shape) -> list[ParamGroup]:
        n_in, n = shape[0], self.units
        assert isinstance(n, int)
        if self.use_bias:
            return [ParamGroup("kernel+bias", f"({n_in}+1)*{n}", (n_in + 1) * n)]
        return [ParamGroup("kernel", f"{n_in}*{n}", n_in * n)]

    def macs(self, shape: Shape, out: Shape) -> int:
        return shape[0] * out[0]

    def build(self, shape: Shape) -> nn.Module:
        assert isinstance(self.units, int)
        return Dense2d(nn.Linear(shape[0], self.units, bias=self.use_bias), self.activation)
