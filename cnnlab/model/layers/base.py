"""The layers a model spec can use, named and parametrised as in Keras.

Every layer is a small dataclass that knows four things about itself, given the shape
of its input (Keras order: ``(height, width, channels)`` for images, ``(features,)``
after ``Flatten``):

* ``output_shape(shape)``  -- the shape it produces (or a :class:`SpecError`),
* ``params(shape)``        -- its weights, each group with the formula that counts it,
* ``macs(shape, out)``     -- multiply-accumulates for one image,
* ``build(shape)``         -- the ``torch.nn.Module`` that computes it (NCHW inside).

Shapes, padding and parameter counts follow Keras exactly, including ``padding="same"``
with strides (TensorFlow pads the extra pixel at the bottom/right) and
BatchNormalization's 4*C parameters (2*C trainable, 2*C non-trainable).
"""

from __future__ import annotations

import difflib
from collections import OrderedDict
import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import SpecError
from cnnlab.registry import Registry

Shape = tuple[int, ...]

# ---------------------------------------------------------------------------------------
# Argument checking: each dataclass field carries a checker and a help line.
# ---------------------------------------------------------------------------------------


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, bool):
        raise ValueError(f"expected an integer or [height, width], got {v!r}")
    if isinstance(v, int):
        v = (v, v)
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(
        isinstance(x, int) and not isinstance(x, bool) for x in v
    ):
        if min(v) < 1:
            raise ValueError(f"must be at least 1, got {list(v)}")
        return (int(v[0]), int(v[1]))
    raise ValueError(f"expected an integer or [height, width], got {v!r}")


def _zero_padding(v: Any) -> tuple:
    """Keras' ZeroPadding2D padding: 1, [1, 2] or [[top, bottom], [left, right]] (0 allowed).

    Symmetric padding is kept as (rows, columns); asymmetric as ((top, bottom), (left, right)).
    """
    def count(x: Any) -> int:
        if isinstance(x, bool) or not isinstance(x, int) or x < 0:
            raise ValueError(f"expected 1, [1, 2] or [[top, bottom], [left, right]], got {v!r}")
        return x

    if isinstance(v, int) and not isinstance(v, bool):
        return (count(v), count(v))
    if isinstance(v, (list, tuple)) and len(v) == 2:
        if all(isinstance(p, (list, tuple)) for p in v) and all(len(p) == 2 for p in v):
            (t, b), (l, r) = [(count(p[0]), count(p[1])) for p in v]
            return (t, l) if (t, l) == (b, r) else ((t, b), (l, r))
        return (count(v[0]), count(v[1]))
    raise ValueError(f"expected 1, [1, 2] or [[top, bottom], [left, right]], got {v!r}")


def _positive_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"expected a positive integer, got {v!r}")
    return v


def _rate(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
        raise ValueError(f"expected a rate in [0, 1), got {v!r}")
    return float(v)


def _positive_float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
        raise ValueError(f"expected a positive number, got {v!r}")
    return float(v)


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {v!r}")
    return v


def _choice(*options: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if v not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {v!r}")
        return v

    return check


def _units(v: Any) -> int | str:
    if v == "classes":
        return v
    return _positive_int(v)


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "linear": nn.Identity,
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),  # Keras' default negative slope is 0.2
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "swish": nn.SiLU,
    "silu": nn.SiLU,
    "sigmoid": nn.Sigmoid,
    "hard_sigmoid": nn.Hardsigmoid,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "softmax": lambda: nn.Softmax(dim=1),
}


def _activation(v: Any) -> str | None:
    if v is None:
        return None
    if v not in ACTIVATIONS:
        close = difflib.get_close_matches(str(v), ACTIVATIONS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown activation {v!r}{hint}; choose from {', '.join(ACTIVATIONS)}")
    return None if v == "linear" else v


def make_activation(name: str | None) -> nn.Module:
    return nn.Identity() if name is None else ACTIVATIONS[name]()


def _plain(v: Any) -> Any:
    """Tuples (nested too) as lists, so that YAML and JSON write them plainly."""
    return [_plain(x) for x in v] if isinstance(v, (tuple, list)) else v


def arg(check: Callable[[Any], Any], help: str, default: Any = MISSING) -> Any:
    """A layer argument: its checker, its help line and its default (none = required)."""
    return field(default=default, metadata={"check": check, "help": help})


# ---------------------------------------------------------------------------------------
# Shape arithmetic, as Keras/TensorFlow does it.
# ---------------------------------------------------------------------------------------


def conv_out(size: int, k: int, s: int, padding: str, d: int = 1) -> int:
    """Output length along one axis: valid = floor((n - k_eff) / s) + 1, same = ceil(n / s)."""
    k_eff = (k - 1) * d + 1
    if padding == "same":
        return math.ceil(size / s)
    return (size - k_eff) // s + 1 if size >= k_eff else 0


def same_pads(size: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """TensorFlow's 'same' padding along one axis: (before, after); the odd pixel goes after."""
    k_eff = (k - 1) * d + 1
    total = max((math.ceil(size / s) - 1) * s + k_eff - size, 0)
    return total // 2, total - total // 2


@dataclass
class ParamGroup:
    """One group of weights with the arithmetic that counts it, for the summary."""

    what: str  # e.g. "kernel+bias"
    formula: str  # e.g. "(3*3*3+1)*32"
    count: int
    trainable: bool = True


# ---------------------------------------------------------------------------------------
# The base class and the registry.
# ---------------------------------------------------------------------------------------

LAYERS: Registry = Registry("layer type", see="see `cnnlab layers`")  # name -> the Layer class


def register(cls: type["Layer"]) -> type["Layer"]:
    """Class decorator: a spec may name the layer type by its class name (``- Conv2D: {...}``)."""
    LAYERS.add(cls.__name__, cls.doc, cls)
    return cls


@dataclass
class Layer:
    """Base class: a Keras-style layer description. Subclasses are dataclasses."""

    needs: ClassVar[str] = "image"  # "image" (H, W, C), "flat" (N,), or "any"
    doc: ClassVar[str] = ""

    # -- construction and checking ---------------------------------------------------------
    def __post_init__(self) -> None:
        """Check and normalise every argument, from a spec or from Python alike."""
        for f in fields(self):
            check = f.metadata.get("check")
            if check is None:
                continue
            try:
                setattr(self, f.name, check(getattr(self, f.name)))
            except ValueError as e:
                raise ValueError(f"argument {f.name!r}: {e}") from None
        if self.name is not None and (not isinstance(self.name, str) or not self.name.isidentifier()):
            raise ValueError(f"name must be a simple identifier, got {self.name!r}")

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> "Layer":
        """Build from a spec entry's arguments; raises ValueError with a readable reason."""
        known = {f.name: f for f in fields(cls)}
        for key in args:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean {close[0]!r}" if close else ""
                allowed = ", ".join(k for k in known if k != "name") or "none"
                raise ValueError(f"unknown argument {key!r}{hint} (allowed: {allowed})")
        missing = [n for n, f in known.items() if f.default is MISSING and n not in args]
        if missing:
            raise ValueError(f"missing required argument {missing[0]!r}")
        return cls(**args)

    @classmethod
    def arguments(cls) -> list[tuple[str, Any, str]]:
        """(name, default or None when required, help) for `cnnlab layers`."""
        out = []
        for f in fields(cls):
            if f.name == "name":
                continue
            default = "required" if f.default is MISSING else f.default
            out.append((f.name, default, f.metadata.get("help", "")))
        return out

    def to_args(self) -> dict[str, Any]:
        """The arguments that differ from the defaults, as a spec would write them."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "name" and v is None:
                continue
            if f.default is MISSING or v != f.default:
                out[f.name] = _plain(v)
        return out

    # -- what each layer defines ----------------------------------------------------------
    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def params(self, shape: Shape) -> list[ParamGroup]:
        """Weight groups; a composite layer's are its children's (none for a plain layer)."""
        return [g for _, layer, s in self.children(shape) for g in layer.params(s)]

    def macs(self, shape: Shape, out: Shape) -> int:
        return sum(layer.macs(s, layer.output_shape(s)) for _, layer, s in self.children(shape))

    def rf(self) -> tuple[int, int]:
        """(kernel, stride) along one axis, for the receptive-field arithmetic."""
        return 1, 1

    def build(self, shape: Shape) -> nn.Module:
        raise NotImplementedError

    def children(self, shape: Shape) -> list[tuple[str, "Layer", Shape]]:
        """Sub-layers (name, layer, input shape) for composite layers like ResidualBlock."""
        return []


# ---------------------------------------------------------------------------------------
# torch modules with Keras 'same' padding (asymmetric when needed).
# ---------------------------------------------------------------------------------------


def _pad_spec(shape: Shape, k: tuple[int, int], s: tuple[int, int], d: tuple[int, int]):
    """Either a symmetric (ph, pw) for the op itself, or an F.pad tuple (l, r, t, b)."""
    top, bottom = same_pads(shape[0], k[0], s[0], d[0])
    left, right = same_pads(shape[1], k[1], s[1], d[1])
    if top == bottom and left == right:
        return (top, left), None
    return (0, 0), (left, right, top, bottom)


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


class Dense2d(nn.Module):
    def __init__(self, lin: nn.Linear, activation: str | None):
        super().__init__()
        self.linear = lin
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.linear(x))


class ActivationModule(nn.Module):
    def __init__(self, activation: str | None):
        super().__init__()
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x)


class FlattenModule(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


class GlobalPool(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(2, 3)) if self.kind == "max" else x.mean(dim=(2, 3))


class ZeroPad(nn.Module):
    def __init__(self, pad: tuple[int, int, int, int]):
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.pad)


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
# The layers.
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
            # returned an invalid gradient at index 2": torch 2.11 on an H200, benchmarks/RESULTS.md).
            del bn.weight
            bn.register_buffer("weight", torch.ones(shape[-1]), persistent=False)
        return bn


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


@register
@dataclass
class Activation(Layer):
    doc: ClassVar[str] = "Applies an activation function on its own."
    needs: ClassVar[str] = "any"
    activation: str | None = arg(_activation, "relu, leaky_relu, elu, gelu, sigmoid, tanh, softmax, ...")
    name: str | None = None

    def build(self, shape: Shape) -> nn.Module:
        return ActivationModule(self.activation)


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


# ---------------------------------------------------------------------------------------
# Layers that models written with Keras use: preprocessing inside the model, activation
# layers with their own arguments, and Residual for a functional model's Add. They are
# what `cnnlab.io.keras` maps a .keras/.h5 file onto; a spec may use them too.
# ---------------------------------------------------------------------------------------


def _number_or_list(v: Any) -> float | tuple[float, ...]:
    """A number, or one number per channel."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, (list, tuple)) and v and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in v
    ):
        return tuple(float(x) for x in v)
    raise ValueError(f"expected a number or a list of numbers (one per channel), got {v!r}")


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


def _optional_number(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"expected a number or null, got {v!r}")
    return float(v)


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"expected a number, got {v!r}")
    return float(v)


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
    import re

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


# ---------------------------------------------------------------------------------------
# Layers of the fast CIFAR recipe (see cnnlab/train/recipes.py).
# ---------------------------------------------------------------------------------------


class WhiteningConv(nn.Module):
    """A frozen k x k convolution whose kernels whiten the image patches it sees.

    ``fit(x)`` sets the kernels from a batch of (normalised) training images: with Σ the
    covariance of all k x k x C patches (D = k*k*C values each), Σ = V diag(λ) Vᵀ, the
    filters are the rows of diag(1/sqrt(λ + ε)) Vᵀ -- PCA whitening -- so the D output
    channels are uncorrelated with unit variance (ε keeps the noisiest directions from
    being blown up). The bias starts at -W·mean, so the outputs start centred; it trains,
    the kernels never do. With ``negate`` the D negated filters follow (2*D channels), so
    an activation after the stem keeps both signs of each component.
    """

    def __init__(self, conv: nn.Conv2d, epsilon: float, negate: bool, activation: str | None):
        super().__init__()
        self.conv = conv
        self.conv.weight.requires_grad_(False)
        self.epsilon, self.negate = epsilon, negate
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> torch.Tensor:
        """Set the kernels (and bias) from images x (N, C, H, W); returns the eigenvalues."""
        k = self.conv.kernel_size
        patches = F.unfold(x.double(), k).transpose(1, 2).reshape(-1, x.shape[1] * k[0] * k[1])
        mean = patches.mean(0)
        centred = patches - mean
        cov = centred.T @ centred / (len(patches) - 1)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)  # ascending
        eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)  # strongest first
        w = eigenvectors.T / torch.sqrt(eigenvalues.clamp(min=0) + self.epsilon)[:, None]
        if self.negate:
            w = torch.cat([w, -w])
        weight = self.conv.weight
        weight.copy_(w.reshape(weight.shape).to(weight.dtype))  # unfold's order is (C, kh, kw)
        if self.conv.bias is not None:
            self.conv.bias.copy_((-w @ mean).to(self.conv.bias.dtype))
        return eigenvalues


@register
@dataclass
class PatchWhitening(Layer):
    doc: ClassVar[str] = (
        "Frozen k x k convolution whose kernels whiten the image patches, computed from the "
        "training images when training starts (stem of airbench, Jordan 2024; after tysam-code's "
        "hlb-CIFAR10 and Page's ResNet speed runs)."
    )
    patch_size: tuple[int, int] = arg(_pair, "patch (kernel) height and width", (2, 2))
    epsilon: float = arg(_positive_float, "added to each eigenvalue before 1/sqrt (limits the gain)", 5e-4)
    negate: bool = arg(_bool, "also output the negated filters (doubles the channels)", True)
    activation: str | None = arg(_activation, "activation applied to the output", None)
    use_bias: bool = arg(_bool, "a bias per output channel (trained; the kernels are frozen)", True)
    name: str | None = None

    def _filters(self, shape: Shape) -> int:
        d = self.patch_size[0] * self.patch_size[1] * shape[2]
        return 2 * d if self.negate else d

    def output_shape(self, shape: Shape) -> Shape:
        return Conv2D(self._filters(shape), self.patch_size).output_shape(shape)

    def params(self, shape: Shape) -> list[ParamGroup]:
        (kh, kw), cin, n = self.patch_size, shape[2], self._filters(shape)
        groups = [ParamGroup("kernel (frozen)", f"{kh}*{kw}*{cin}*{n}", kh * kw * cin * n, False)]
        if self.use_bias:
            groups.append(ParamGroup("bias", f"{n}", n, True))
        return groups

    def macs(self, shape: Shape, out: Shape) -> int:
        return out[0] * out[1] * out[2] * self.patch_size[0] * self.patch_size[1] * shape[2]

    def rf(self) -> tuple[int, int]:
        return self.patch_size[0], 1

    def build(self, shape: Shape) -> nn.Module:
        conv = nn.Conv2d(shape[2], self._filters(shape), self.patch_size, bias=self.use_bias)
        with torch.no_grad():  # until fit(): an unwhitened but harmless start
            if conv.bias is not None:
                conv.bias.zero_()
        return WhiteningConv(conv, self.epsilon, self.negate, self.activation)


def data_init(model: nn.Module, images: torch.Tensor) -> list[str]:
    """Fit every data-initialised layer (PatchWhitening) of a CNN to a batch of its inputs.

    ``images``: normalised float (N, C, H, W), the model's own input. The batch runs through
    the layers in order, so a whitening layer deeper in the model sees its real input.
    Returns the names of the layers that were fitted.
    """
    layers = getattr(model, "layers", None)
    if layers is None:
        return []
    fitted: list[str] = []
    names = [n for n, m in layers.items() if hasattr(m, "fit")]
    if not names:
        return fitted
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x = images.float()
            for name, layer in layers.items():
                if hasattr(layer, "fit"):
                    layer.fit(x)
                    fitted.append(name)
                if len(fitted) == len(names):
                    break
                x = layer(x)
    finally:
        model.train(was_training)
    return fitted
