"""The base of every layer: argument checking, shape arithmetic, :class:`Layer` and the registry.

Every layer is a small dataclass that knows four things about itself, given the shape
of its input (Keras order: ``(height, width, channels)`` for images, ``(features,)``
after ``Flatten``):

* ``output_shape(shape)``  -- the shape it produces (or a :class:`SpecError`),
* ``params(shape)``        -- its weights, each group with the formula that counts it,
* ``macs(shape, out)``     -- multiply-accumulates for one image,
* ``build(shape)``         -- the ``torch.nn.Module`` that computes it (NCHW inside).

Each argument is a dataclass field made by :func:`arg`: its checker (below), its help line
(``cnnlab layers``) and its default. ``@register`` puts a layer type into :data:`LAYERS`,
where a spec finds it by its class name.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Callable, ClassVar

from torch import nn

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


def _number_or_list(v: Any) -> float | tuple[float, ...]:
    """A number, or one number per channel."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, (list, tuple)) and v and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in v
    ):
        return tuple(float(x) for x in v)
    raise ValueError(f"expected a number or a list of numbers (one per channel), got {v!r}")


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


def _pad_spec(shape: Shape, k: tuple[int, int], s: tuple[int, int], d: tuple[int, int]):
    """Either a symmetric (ph, pw) for the op itself, or an F.pad tuple (l, r, t, b)."""
    top, bottom = same_pads(shape[0], k[0], s[0], d[0])
    left, right = same_pads(shape[1], k[1], s[1], d[1])
    if top == bottom and left == right:
        return (top, left), None
    return (0, 0), (left, right, top, bottom)


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
