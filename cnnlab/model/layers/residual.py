"""Residual connections: ResidualBlock (ResNet's basic block) and Residual (any two branches added,
a Keras functional model's Add)."""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from cnnlab.errors import SpecError
from cnnlab.model.layers.activation import Activation
from cnnlab.model.layers.base import (LAYERS, Layer, Shape, _activation, _bool, _pair, _positive_int, _rate, arg,
                                      make_activation, register)
from cnnlab.model.layers.conv import Conv2D
from cnnlab.model.layers.normalization import BatchNormalization


class ResidualModule(nn.Module):
    """out = activation(main(x) + shortcut(x)), as in ResNet's basic block."""

    def __init__(self, main: nn.Sequential, shortcut: nn.Module, activation: str | None):
        super().__init__()
        self.main = main
        self.shortcut = shortcut
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.main(x) + self.shortcut(x))


@register
@dataclass
class ResidualBlock(Layer):
    doc: ClassVar[str] = (
        "ResNet basic block: Conv-BN-act-Conv-BN plus a shortcut (1x1 conv + BN when the "
        "shape changes), then the activation."
    )
    filters: int = arg(_positive_int, "output channels of both convolutions")
    kernel_size: tuple[int, int] = arg(_pair, "kernel of both convolutions", (3, 3))
    strides: tuple[int, int] = arg(_pair, "stride of the first convolution (2 halves the size)", (1, 1))
    activation: str | None = arg(_activation, "activation inside and after the block", "relu")
    batch_norm: bool = arg(_bool, "BatchNormalization after each convolution", True)
    momentum: float = arg(_rate, "momentum of its BatchNormalizations' moving averages", 0.99)
    name: str | None = None

    def _parts(self, shape: Shape) -> list[tuple[str, Layer]]:
        bias = not self.batch_norm
        main: list[tuple[str, Layer]] = [
            ("conv1", Conv2D(self.filters, self.kernel_size, self.strides, "same", None, bias))
        ]
        if self.batch_norm:
            main.append(("bn1", BatchNormalization(self.momentum)))
        main.append(("act1", Activation(self.activation)))
        main.append(("conv2", Conv2D(self.filters, self.kernel_size, (1, 1), "same", None, bias)))
        if self.batch_norm:
            main.append(("bn2", BatchNormalization(self.momentum)))
        return main

    def _shortcut(self, shape: Shape) -> list[tuple[str, Layer]]:
        if self.strides == (1, 1) and shape[2] == self.filters:
            return []
        parts: list[tuple[str, Layer]] = [
            ("shortcut", Conv2D(self.filters, (1, 1), self.strides, "same", None, not self.batch_norm))
        ]
        if self.batch_norm:
            parts.append(("shortcut_bn", BatchNormalization(self.momentum)))
        return parts

    def children(self, shape: Shape) -> list[tuple[str, Layer, Shape]]:
        out = []
        for parts in (self._parts(shape), self._shortcut(shape)):
            s = shape
            for name, layer in parts:
                out.append((name, layer, s))
                s = layer.output_shape(s)
        return out

    def output_shape(self, shape: Shape) -> Shape:
        s = shape
        for _, layer in self._parts(shape):
            s = layer.output_shape(s)
        return s

    def rf(self) -> tuple[int, int]:
        # Two k x k convolutions, the first strided: k + (k - 1) * stride along the main path.
        k, s = self.kernel_size[0], self.strides[0]
        return k + (k - 1) * s, s

    def build(self, shape: Shape) -> nn.Module:
        def seq(parts: list[tuple[str, Layer]]) -> nn.Sequential:
            mods, s = [], shape
            for name, layer in parts:
                mods.append((name, layer.build(s)))
                s = layer.output_shape(s)
            return nn.Sequential(OrderedDict(mods))

        shortcut = self._shortcut(shape)
        return ResidualModule(
            seq(self._parts(shape)), seq(shortcut) if shortcut else nn.Identity(), self.activation
        )


def _branch(v: Any) -> tuple[tuple[str, "Layer"], ...]:
    """A list of spec layer entries ('- Conv2D: {...}') -> ((name, layer), ...)."""
    if isinstance(v, tuple) and all(isinstance(p, tuple) and len(p) == 2 and isinstance(p[1], Layer) for p in v):
        return v
    if not isinstance(v, list):
        raise ValueError(f"expected a list of layers, got {v!r}")
    out: list[tuple[str, Layer]] = []
    for i, entry in enumerate(v, start=1):
        if isinstance(entry, str):
            entry = {entry: {}}
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ValueError(f"layer {i} must be written as 'LayerName: {{arguments}}', got {entry!r}")
        (kind, args), = entry.items()
        if kind not in LAYERS or kind == "Residual":
            raise ValueError(f"layer {i}: unknown layer type {kind!r} inside a branch")
        try:
            layer = LAYERS[kind].build.from_args(dict(args or {}))
        except (ValueError, TypeError) as e:
            raise ValueError(f"layer {i} ({kind}): {e}") from None
        name = layer.name or f"{_snake_name(kind)}_{len(out)}"
        if any(name == n for n, _ in out):
            raise ValueError(f"layer {i} ({kind}): the name {name!r} is used twice")
        out.append((name, layer))
    return tuple(out)


def _snake_name(kind: str) -> str:
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", kind).lower()


@register
@dataclass
class Residual(Layer):
    doc: ClassVar[str] = (
        "main(x) + shortcut(x): Keras' Add of two branches from one tensor (a residual "
        "connection of a functional model). An empty shortcut is the identity."
    )
    needs: ClassVar[str] = "any"
    main: tuple = arg(_branch, "the layers of one branch, in order")
    shortcut: tuple = arg(_branch, "the layers of the other branch ([] = x itself)", ())
    name: str | None = None

    def to_args(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in ("main", "shortcut"):
            entries = []
            for name, layer in getattr(self, key):
                args = layer.to_args()
                args["name"] = name
                entries.append({type(layer).__name__: args})
            out[key] = entries
        if self.name is not None:
            out["name"] = self.name
        return out

    def _walk(self, parts, shape: Shape) -> tuple[list[tuple[str, "Layer", Shape]], Shape]:
        out, s = [], shape
        for name, layer in parts:
            out.append((name, layer, s))
            s = layer.output_shape(s)
        return out, s

    def children(self, shape: Shape) -> list[tuple[str, "Layer", Shape]]:
        return self._walk(self.main, shape)[0] + self._walk(self.shortcut, shape)[0]

    def output_shape(self, shape: Shape) -> Shape:
        _, a = self._walk(self.main, shape)
        _, b = self._walk(self.shortcut, shape)
        if a != b:
            raise SpecError(f"its branches end in different shapes, {a} and {b}, which cannot be added")
        return a

    def rf(self) -> tuple[int, int]:
        k, s = 1, 1
        for _, layer in self.main:
            lk, ls = layer.rf()
            k, s = k + (max(lk, 1) - 1) * s, s * ls
        return k, s

    def build(self, shape: Shape) -> nn.Module:
        def seq(parts) -> nn.Module:
            if not parts:
                return nn.Identity()
            mods = OrderedDict((name, layer.build(s)) for name, layer, s in self._walk(parts, shape)[0])
            return nn.Sequential(mods)

        return ResidualModule(seq(self.main), seq(self.shortcut), None)
