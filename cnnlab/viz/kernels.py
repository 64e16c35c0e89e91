"""Classic image kernels (edge, Sobel, sharpen, blur...) and what they do to a photo.

A kernel is a small matrix of numbers. Slide it over a grey image and, at every position,
sum the products of the kernel's numbers with the pixels under them: the sums form a
*feature map*. With stride s and no padding that is

    out[i, j] = sum over m, n of  image[i*s + m, j*s + n] * kernel[m, n]

which is exactly what ``torch.nn.functional.conv2d`` and Keras' ``Conv2D`` compute.
Strictly it is *cross-correlation*: mathematical convolution flips the kernel by 180°
first, ``out[i, j] = sum image[i - m, j - n] * kernel[m, n]``. Deep-learning frameworks
skip the flip because a learned kernel can just as well learn the flipped numbers. For a
symmetric kernel (blur, sharpen) the two agree; for Sobel the flip reverses the sign.

    >>> from cnnlab.viz import plot_kernels
    >>> fig = plot_kernels(kernels="sobel-x,sharpen", path="kernels.png")
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from cnnlab.data.decode import load_image
from cnnlab.errors import CnnlabError
from cnnlab.model.layers import same_pads

MAX_KERNEL_SIZE = 31


@dataclass(frozen=True)
class Kernel:
    """A named kernel: ``numbers`` as a person writes them, times ``scale``.

    The Gaussian blur is ``1/16 * [[1, 2, 1], [2, 4, 2], [1, 2, 1]]``: numbers are the
    integers, scale is ``Fraction(1, 16)``; ``weights`` are the values actually applied.
    """

    name: str
    numbers: tuple[tuple[float, ...], ...]
    scale: Fraction | float = 1
    about: str = ""

    @property
    def weights(self) -> np.ndarray:
        return np.asarray(self.numbers, dtype=np.float64) * float(self.scale)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.numbers), len(self.numbers[0])

    @property
    def symmetric(self) -> bool:
        """True when a 180° rotation changes nothing: convolution = cross-correlation."""
        w = self.weights
        return bool(np.allclose(w, w[::-1, ::-1]))

    @property
    def zero_sum(self) -> bool:
        """Weights summing to 0 respond to changes (edges) and give 0 on flat regions."""
        return abs(float(self.weights.sum())) < 1e-9

    def flipped(self) -> "Kernel":
        """The kernel rotated by 180°: convolving with it = cross-correlating with this one."""
        rows = tuple(tuple(r[::-1]) for r in self.numbers[::-1])
        return Kernel(f"{self.name} flipped 180°", rows, self.scale, self.about)

    def scale_text(self) -> str:
        """'1/16' for a fraction, '' when the scale is 1."""
        if self.scale == 1:
            return ""
        if isinstance(self.scale, Fraction):
            return f"{self.scale.numerator}/{self.scale.denominator}"
        return f"{self.scale:g}"


def _k(name: str, rows: list[list[int]], about: str, scale: Fraction | int = 1) -> Kernel:
    return Kernel(name, tuple(tuple(r) for r in rows), scale, about)


KERNELS: dict[str, Kernel] = {k.name: k for k in [
    _k("edge", [[0, -1, 0], [-1, 4, -1], [0, -1, 0]],
       "Laplacian: the pixel minus its 4 neighbours; non-zero where brightness changes"),
    _k("sobel-x", [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
       "vertical edges: positive where the image gets brighter to the right"),
    _k("sobel-y", [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
       "horizontal edges: positive where the image gets brighter downwards"),
    _k("sharpen", [[0, -1, 0], [-1, 5, -1], [0, -1, 0]],
       "the pixel plus its Laplacian: edges get more contrast"),
    _k("box-blur", [[1, 1, 1], [1, 1, 1], [1, 1, 1]],
       "the mean of the 3x3 neighbourhood", Fraction(1, 9)),
    _k("gaussian", [[1, 2, 1], [2, 4, 2], [1, 2, 1]],
       "a weighted mean where the centre counts most: a softer blur", Fraction(1, 16)),
    _k("emboss", [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]],
       "a relief: light and shadow along diagonal edges"),
    _k("outline", [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]],
       "the pixel minus its 8 neighbours: every edge, strongly"),
    _k("identity", [[0, 0, 0], [0, 1, 0], [0, 0, 0]],
       "copies the image: a check that nothing shifts"),
]}

DEFAULT_KERNELS = ("edge", "sobel-x", "sobel-y", "sharpen", "box-blur", "gaussian", "emboss", "outline")


# ---------------------------------------------------------------------------------------
# Kernels from names and files.
# ---------------------------------------------------------------------------------------


def _matrix(value: Any, where: str) -> tuple[tuple[float, ...], ...]:
    """Check a list of equal-length rows of finite numbers."""
    if not isinstance(value, list) or not value or not all(isinstance(r, list) and r for r in value):
        raise CnnlabError(f"{where}: must be a matrix written as a list of rows, e.g. "
                          "[[0, -1, 0], [-1, 5, -1], [0, -1, 0]]")
    if len({len(r) for r in value}) != 1:
        raise CnnlabError(f"{where}: rows have different lengths ({', '.join(str(len(r)) for r in value)})")
    for r in value:
        for v in r:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise CnnlabError(f"{where}: {v!r} is not a finite number")
    if max(len(value), len(value[0])) > MAX_KERNEL_SIZE:
        raise CnnlabError(f"{where}: {len(value)}x{len(value[0])} is larger than "
                          f"{MAX_KERNEL_SIZE}x{MAX_KERNEL_SIZE}")
    return tuple(tuple(r) for r in value)


def _scale(value: Any, where: str) -> Fraction | float:
    if isinstance(value, bool):
        raise CnnlabError(f"{where}: scale must be a number or a fraction like 1/16, got {value!r}")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, str):
        try:
            return Fraction(value.replace(" ", ""))
        except (ValueError, ZeroDivisionError):
            pass
    raise CnnlabError(f"{where}: scale must be a number or a fraction like 1/16, got {value!r}")


def _kernel_entry(name: str, value: Any, where: str) -> Kernel:
    if isinstance(value, dict):
        unknown = set(value) - {"matrix", "scale", "about"}
        if unknown or "matrix" not in value:
            raise CnnlabError(f"{where}: write the kernel as a matrix, or as a mapping with "
                              f"'matrix' and optional 'scale' and 'about' (got keys {sorted(value)})")
        return Kernel(name, _matrix(value["matrix"], where), _scale(value.get("scale", 1), where),
                      str(value.get("about", "")))
    return Kernel(name, _matrix(value, where))


def load_kernel_file(path: str | Path) -> list[Kernel]:
    """Kernels from a YAML or JSON file.

    Three forms: a bare matrix (named after the file); ``{matrix: ..., scale: 1/16}``; or a
    mapping from names to either of those::

        my-edge: [[1, 0, -1], [1, 0, -1], [1, 0, -1]]
        blur-5:
          matrix: [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]
          scale: 1/25
    """
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"{path}: no such kernel file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise CnnlabError(f"{path}: not valid YAML or JSON{at}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CnnlabError(f"{path}: cannot be read ({e.__class__.__name__})") from None
    if isinstance(data, list) or (isinstance(data, dict) and "matrix" in data):
        return [_kernel_entry(path.stem, data, f"{path}")]
    if not isinstance(data, dict) or not data:
        raise CnnlabError(f"{path}: expected a matrix or a mapping of kernel names to matrices")
    return [_kernel_entry(str(name), value, f"{path}: kernel {name!r}") for name, value in data.items()]


def get_kernels(which: str | Iterable[str | Kernel] = DEFAULT_KERNELS) -> list[Kernel]:
    """Kernels from built-in names and kernel files: ``"sobel-x,sharpen,mine.yaml"``."""
    items = [s.strip() for s in which.split(",") if s.strip()] if isinstance(which, str) else list(which)
    out: list[Kernel] = []
    for item in items:
        if isinstance(item, Kernel):
            out.append(item)
        elif item in KERNELS:
            out.append(KERNELS[item])
        elif Path(item).suffix.lower() in (".yaml", ".yml", ".json") or Path(item).is_file():
            out.extend(load_kernel_file(item))
        else:
            close = difflib.get_close_matches(item, KERNELS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise CnnlabError(f"unknown kernel {item!r}{hint}; built-in kernels are "
                              f"{', '.join(KERNELS)}, or give a .yaml/.json file")
    if not out:
        raise CnnlabError("no kernels given; name built-in kernels (e.g. sobel-x,sharpen) or a .yaml file")
    names = [k.name for k in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise CnnlabError(f"kernel {twice[0]!r} is given twice; give each kernel once "
                          "(rename a kernel in your file if it clashes with a built-in name)")
    return out


# ---------------------------------------------------------------------------------------
# The arithmetic: torch's conv2d on one grey channel.
# ---------------------------------------------------------------------------------------


def parse_padding(padding: str | int) -> str | int:
    """'valid', 'same' or a number of zero pixels added on every side."""
    if isinstance(padding, str) and padding.strip().isdigit():
        padding = int(padding)
    if isinstance(padding, int) and not isinstance(padding, bool) and padding >= 0:
        return padding
    if padding in ("valid", "same"):
        return padding
    raise CnnlabError(f"padding must be valid, same or a number of pixels >= 0, got {padding!r}")


def pads(size: tuple[int, int], kernel_shape: tuple[int, int], stride: int,
         padding: str | int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zeros around an image of `size` (height, width).

    'same' pads as Keras/TensorFlow do: enough for ceil(n / stride) outputs, the odd
    pixel at the bottom/right.
    """
    padding = parse_padding(padding)
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        top, bottom = same_pads(size[0], kernel_shape[0], stride)
        left, right = same_pads(size[1], kernel_shape[1], stride)
        return (left, right, top, bottom)
    return (padding,) * 4


def cross_correlate(image, kernel: Kernel | np.ndarray, stride: int = 1,
                    padding: str | int = "valid") -> torch.Tensor:
    """Feature map of a grey (H, W) image: what a Conv2D with this one kernel computes.

    The result is ``F.conv2d(image, kernel, stride=stride)`` after zero padding.
    """
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise CnnlabError(f"stride must be a positive integer, got {stride!r}")
    w = kernel.weights if isinstance(kernel, Kernel) else np.asarray(kernel, dtype=np.float64)
    x = torch.as_tensor(np.asarray(image), dtype=torch.float32)
    if x.ndim != 2:
        raise CnnlabError(f"expected a grey (height, width) image, got shape {tuple(x.shape)}")
    k = torch.as_tensor(w, dtype=torch.float32)
    left, right, top, bottom = pads(tuple(x.shape), tuple(k.shape), stride, padding)
    h, wd = x.shape[0] + top + bottom, x.shape[1] + left + right
    if k.shape[0] > h or k.shape[1] > wd:
        name = kernel.name if isinstance(kernel, Kernel) else "the kernel"
        raise CnnlabError(f"kernel {name!r} ({k.shape[0]}x{k.shape[1]}) is larger than the "
                          f"padded image ({h}x{wd}); use a larger image or more padding")
    x = F.pad(x[None, None], (left, right, top, bottom))
    return F.conv2d(x, k[None, None], stride=stride)[0, 0]


def convolve(image, kernel: Kernel | np.ndarray, stride: int = 1,
             padding: str | int = "valid") -> torch.Tensor:
    """Mathematical convolution: cross-correlation with the kernel rotated by 180°."""
    w = kernel.weights if isinstance(kernel, Kernel) else np.asarray(kernel, dtype=np.float64)
    return cross_correlate(image, np.ascontiguousarray(w[::-1, ::-1]), stride, padding)


def output_size(n: int, k: int, stride: int, before: int, after: int) -> int:
    """floor((n + padding - k) / stride) + 1: the formula every CNN course teaches."""
    return (n + before + after - k) // stride + 1


# ---------------------------------------------------------------------------------------
# The input image.
# ---------------------------------------------------------------------------------------


def sample_image() -> np.ndarray:
    """A real photo that ships with scikit-learn (a Chinese temple), (427, 640, 3) uint8."""
    from sklearn.datasets import load_sample_image

    return load_sample_image("china.jpg")


def prepare_image(image=None, size: int | None = 256) -> np.ndarray:
    """RGB uint8 (H, W, 3) from a path, an array or None (the sample photo), its longest
    side resized to `size` pixels (None or 0 keeps the original size)."""
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise CnnlabError(f"size (the photo's longest side in pixels) must be 0 or more, got {size!r}")
    if image is None:
        arr = sample_image()
    elif isinstance(image, (str, Path)):
        arr = load_image(image, None, 3)
    else:
        arr = np.asarray(image)
        if arr.dtype != np.uint8:
            arr = (np.clip(arr.astype(np.float64), 0, 1) * 255).round().astype(np.uint8)
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (1, 3):
            raise CnnlabError(f"expected an (H, W, 3) or (H, W) image, got shape {arr.shape}")
        if arr.shape[2] == 1:
            arr = np.repeat(arr, 3, axis=2)
    if size:
        h, w = arr.shape[:2]
        f = size / max(h, w)
        if f < 1:
            new = (max(1, round(w * f)), max(1, round(h * f)))
            arr = np.asarray(Image.fromarray(arr).resize(new, Image.Resampling.LANCZOS))
    return arr


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 -> grey floats in [0, 1] (ITU-R 601 luma, as Pillow's 'L' mode)."""
    return (rgb[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)) / 255.0


def apply_kernels(gray: np.ndarray, kernels: Sequence[Kernel], stride: int = 1,
                  padding: str | int = "valid") -> dict[str, torch.Tensor]:
    """{kernel name: feature map} for a grey image."""
    return {k.name: cross_correlate(gray, k, stride, padding) for k in kernels}
