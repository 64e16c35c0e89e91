"""Activations as layers of their own: Activation (by name), and Keras' ReLU, LeakyReLU and Softmax
layers with their own arguments. The names an ``activation`` argument takes are in ``base.ACTIVATIONS``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from cnnlab.model.layers.base import (Layer, Shape, _activation, _number, _optional_number, arg, make_activation,
                                      register)


class ActivationModule(nn.Module):
    def __init__(self, activation: str | None):
        super().__init__()
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x)


@register
@dataclass
class Activation(Layer):
    doc: ClassVar[str] = "Applies an activation function on its own."
    needs: ClassVar[str] = "any"
    activation: str | None = arg(_activation, "relu, leaky_relu, elu, gelu, sigmoid, tanh, softmax, ...")
    name: str | None = None

    def build(self, shape: Shape) -> nn.Module:
        return ActivationModule(self.activation)


class KerasReLU(nn.Module):
    """Keras' ReLU layer: x above threshold (capped at max_value), else negative_slope * (x - threshold)."""

    def __init__(self, max_value: float | None, negative_slope: float, threshold: float):
        super().__init__()
        self.max_value, self.negative_slope, self.threshold = max_value, negative_slope, threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.where(x >= self.threshold, x, self.negative_slope * (x - self.threshold))
        return y if self.max_value is None else y.clamp(max=self.max_value)


class SoftmaxModule(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=1)


@register
@dataclass
class ReLU(Layer):
    doc: ClassVar[str] = "Rectified linear unit as a layer, with Keras' optional cap, slope and threshold."
    needs: ClassVar[str] = "any"
    max_value: float | None = arg(_optional_number, "largest output (6 gives ReLU6); null: none", None)
    negative_slope: float = arg(_number, "slope below the threshold", 0.0)
    threshold: float = arg(_number, "values below it are cut", 0.0)
    name: str | None = None

    def build(self, shape: Shape) -> nn.Module:
        return KerasReLU(self.max_value, self.negative_slope, self.threshold)


@register
@dataclass
class LeakyReLU(Layer):
    doc: ClassVar[str] = "x for x > 0, negative_slope * x below (Keras' default slope 0.3)."
    needs: ClassVar[str] = "any"
    negative_slope: float = arg(_number, "slope for negative inputs", 0.3)
    name: str | None = None

    def build(self, shape: Shape) -> nn.Module:
        return KerasReLU(None, self.negative_slope, 0.0)


@register
@dataclass
class Softmax(Layer):
    doc: ClassVar[str] = "Softmax over the classes as a layer of its own (the last axis)."
    needs: ClassVar[str] = "flat"
    name: str | None = None

    def build(self, shape: Shape) -> nn.Module:
        return SoftmaxModule()
