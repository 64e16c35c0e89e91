"""Convolutions: Conv2D, DepthwiseConv2D and SeparableConv2D, with Keras' padding and initialisers.

Shapes, padding and parameter counts follow Keras exactly, including ``padding="same"``
with strides (TensorFlow pads the extra pixel at the bottom/right).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import SpecError
from cnnlab.model.layers.base import (Layer, ParamGroup, Shape, _activation, _bool, _choice, _pad_spec, _pair,
                                      _positive_int, arg, conv_out, make_activation, register)


class KerasConv(nn.Module):
    """A convolution (plain or depthwise) with Keras padding and its activation.

    ``pre_activation`` of the last call can be read by visualisations via hooks on
    ``self.conv``; the forward pass itself stays a plain pad -> conv -> activation.
    """

    def __init__(self, conv: nn.Conv2d, pad: tuple | None, activation: str | None):
        super().__init__()
        self.pad = pad
        self.conv = conv
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad is not None:
            x = F.pad(x, self.pad)
        return self.act(self.conv(x))


# ---------------------------------------------------------------------------------------
# Kernel initialisers (Keras' names where Keras has one).
# ---------------------------------------------------------------------------------------

INITIALIZERS = ("default", "dirac", "he_normal", "he_uniform", "glorot_uniform", "glorot_normal")


@torch.no_grad()
def initialize_kernel(weight: torch.Tensor, kind: str) -> None:
    """Set a conv kernel (out, in, kh, kw) in place.

    * ``default``: torch's own (Kaiming uniform with a = sqrt(5)), what cnnlab always used.
    * ``dirac``: the first min(out, in) filters copy their input channel through unchanged
      (a 1 at the kernel centre), the others keep the default start. A deep plain CNN then
      starts close to an identity map, which trains fast without residual connections
      (Zagoruyko & Komodakis 2017, "DiracNets"; used this way by Jordan's airbench 2024).
    * ``he_*`` / ``glorot_*``: Keras' initialisers (He et al. 2015; Glorot & Bengio 2010).
    """
    if kind == "default":
        return
    if kind == "dirac":
        n = min(weight.shape[0], weight.shape[1])
        nn.init.dirac_(weight[:n])
    elif kind == "he_normal":
        nn.init.kaiming_normal_(weight, nonlinearity="relu")
    elif kind == "he_uniform":
        nn.init.kaiming_uniform_(weight, nonlinearity="relu")
    elif kind == "glorot_uniform":
        nn.init.xavier_uniform_(weight)
    elif kind == "glorot_normal":
        nn.init.xavier_normal_(weight)
    else:  # the argument checker makes this unreachable from a spec
        raise ValueError(f"unknown kernel_initializer {kind!r}")


# ---------------------------------------------------------------------------------------
# The convolution layers.
# ---------------------------------------------------------------------------------------


@register
@dataclass
class Conv2D(Layer):
    doc: ClassVar[str] = "2-D convolution: `filters` kernels of kernel_size x kernel_size x C_in."
    filters: int = arg(_positive_int, "number of output channels (kernels)")
    kernel_size: tuple[int, int] = arg(_pair, "kernel height and width: 3 or [3, 5]")
    strides: tuple[int, int] = arg(_pair, "step between positions", (1, 1))
    padding: str = arg(_choice("valid", "same"), "valid (no padding) or same", "valid")
    activation: str | None = arg(_activation, "activation applied to the output", None)
    use_bias: bool = arg(_bool, "add one bias per filter", True)
    dilation_rate: tuple[int, int] = arg(_pair, "spacing between kernel taps", (1, 1))
    kernel_initializer: str = arg(_choice(*INITIALIZERS), "how the kernels start: " + ", ".join(INITIALIZERS),
                                  "default")
    name: str | None = None

    def output_shape(self, shape: Shape) -> Shape:
        h, w, _ = shape
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.strides, self.dilation_rate
        oh = conv_out(h, kh, sh, self.padding, dh)
        ow = conv_out(w, kw, sw, self.padding, dw)
        if oh < 1 or ow < 1:
            raise SpecError(
                f"its {kh}x{kw} kernel (dilation {dh}x{dw}) is larger than its "
                f"{h}x{w} input with padding 'valid'"
            )
        return (oh, ow, self.filters)

    def params(self, shape: Shape) -> list[ParamGroup]:
        (kh, kw), cin, n = self.kernel_size, shape[2], self.filters
        if self.use_bias:
            return [ParamGroup("kernel+bias", f"({kh}*{kw}*{cin}+1)*{n}", (kh * kw * cin + 1) * n)]
        return [ParamGroup("kernel", f"{kh}*{kw}*{cin}*{n}", kh * kw * cin * n)]

    def macs(self, shape: Shape, out: Shape) -> int:
        return out[0] * out[1] * out[2] * self.kernel_size[0] * self.kernel_size[1] * shape[2]

    def rf(self) -> tuple[int, int]:
        return (self.kernel_size[0] - 1) * self.dilation_rate[0] + 1, self.strides[0]

    def build(self, shape: Shape) -> nn.Module:
        sym, pad = (0, 0), None
        if self.padding == "same":
            sym, pad = _pad_spec(shape, self.kernel_size, self.strides, self.dilation_rate)
        conv = nn.Conv2d(shape[2], self.filters, self.kernel_size, self.strides, sym,
                         self.dilation_rate, bias=self.use_bias)
        initialize_kernel(conv.weight, self.kernel_initializer)
        return KerasConv(conv, pad, self.activation)


@register
@dataclass
class DepthwiseConv2D(Layer):
    doc: ClassVar[str] = "One kernel per input channel (no mixing across channels)."
    kernel_size: tuple[int, int] = arg(_pair, "kernel height and width")
    strides: tuple[int, int] = arg(_pair, "step between positions", (1, 1))
    padding: str = arg(_choice("valid", "same"), "valid or same", "valid")
    depth_multiplier: int = arg(_positive_int, "output channels per input channel", 1)
    activation: str | None = arg(_activation, "activation applied to the output", None)
    use_bias: bool = arg(_bool, "add one bias per output channel", True)
    name: str | None = None

    def output_shape(self, shape: Shape) -> Shape:
        conv = Conv2D(shape[2] * self.depth_multiplier, self.kernel_size, self.strides, self.padding)
        return conv.output_shape(shape)

    def params(self, shape: Shape) -> list[ParamGroup]:
        (kh, kw), cin, m = self.kernel_size, shape[2], self.depth_multiplier
        if self.use_bias:
            return [ParamGroup("kernel+bias", f"({kh}*{kw}+1)*{cin}*{m}", (kh * kw + 1) * cin * m)]
        return [ParamGroup("kernel", f"{kh}*{kw}*{cin}*{m}", kh * kw * cin * m)]

    def macs(self, shape: Shape, out: Shape) -> int:
        return out[0] * out[1] * out[2] * self.kernel_size[0] * self.kernel_size[1]

    def rf(self) -> tuple[int, int]:
        return self.kernel_size[0], self.strides[0]

    def build(self, shape: Shape) -> nn.Module:
        sym, pad = (0, 0), None
        if self.padding == "same":
            sym, pad = _pad_spec(shape, self.kernel_size, self.strides, (1, 1))
        cin = shape[2]
        conv = nn.Conv2d(cin, cin * self.depth_multiplier, self.kernel_size, self.strides, sym,
                         groups=cin, bias=self.use_bias)
        return KerasConv(conv, pad, self.activation)


@register
@dataclass
class SeparableConv2D(Layer):
    doc: ClassVar[str] = "Depthwise conv then a 1x1 pointwise conv (MobileNet/Xception style)."
    filters: int = arg(_positive_int, "number of output channels")
    kernel_size: tuple[int, int] = arg(_pair, "depthwise kernel height and width")
    strides: tuple[int, int] = arg(_pair, "step between positions", (1, 1))
    padding: str = arg(_choice("valid", "same"), "valid or same", "valid")
    activation: str | None = arg(_activation, "activation applied to the output", None)
    use_bias: bool = arg(_bool, "add one bias per filter (pointwise)", True)
    name: str | None = None

    def output_shape(self, shape: Shape) -> Shape:
        return Conv2D(self.filters, self.kernel_size, self.strides, self.padding).output_shape(shape)

    def params(self, shape: Shape) -> list[ParamGroup]:
        (kh, kw), cin, n = self.kernel_size, shape[2], self.filters
        groups = [ParamGroup("depthwise", f"{kh}*{kw}*{cin}", kh * kw * cin)]
        if self.use_bias:
            groups.append(ParamGroup("pointwise+bias", f"({cin}+1)*{n}", (cin + 1) * n))
        else:
            groups.append(ParamGroup("pointwise", f"{cin}*{n}", cin * n))
        return groups

    def macs(self, shape: Shape, out: Shape) -> int:
        kh, kw = self.kernel_size
        return out[0] * out[1] * shape[2] * (kh * kw + out[2])

    def rf(self) -> tuple[int, int]:
        return self.kernel_size[0], self.strides[0]

    def build(self, shape: Shape) -> nn.Module:
        cin = shape[2]
        sym, pad = (0, 0), None
        if self.padding == "same":
            sym, pad = _pad_spec(shape, self.kernel_size, self.strides, (1, 1))
        depth = nn.Conv2d(cin, cin, self.kernel_size, self.strides, sym, groups=cin, bias=False)
        point = KerasConv(nn.Conv2d(cin, self.filters, 1, bias=self.use_bias), None, self.activation)
        return nn.Sequential(KerasConv(depth, pad, None), point)
