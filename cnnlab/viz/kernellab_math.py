"""The kernel lab's arithmetic: what the lab computes for one kernel on a photo.

Numbers only, no page and no widgets: the lab itself (its web page, and the ipywidgets lab
for notebooks) is cnnlab.explain.kernellab, whose script static/kernellab.js does these
same sums in the browser. The tests check both against one oracle (tests/kernelref.py).

* :func:`presets`: the lab's kernels as data (cnnlab.viz.kernels.KERNELS and 5x5 blurs);
* :func:`lab_image` and :func:`lab_input`: the photo, as grey luma or as R, G, B in [0, 1];
* :func:`lab_compute`: the feature map(s), :func:`~cnnlab.viz.kernels.cross_correlate`
  (torch's ``conv2d``) on each channel alone;
* :func:`explain_pixel`: one output pixel as patch x kernel, products and sum;
* :func:`parse_cell`: a kernel entry as typed ('2', '-0.5', '1/16').
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cnnlab.errors import CnnlabError
from cnnlab.viz.kernels import DEFAULT_KERNELS, KERNELS, cross_correlate, pads, prepare_image, to_gray

LAB_SIDE = 192  # the photo's longest side in the lab: small enough to recompute at every keystroke
MODES = ("grey", "rgb")


def _five(name: str, rows: list[list[int]], scale: str, about: str) -> dict[str, Any]:
    return {"name": name, "size": 5, "numbers": rows, "scale": scale, "about": about}


def presets() -> list[dict[str, Any]]:
    """The lab's kernels: the classic 3x3 ones (cnnlab.viz.kernels.KERNELS) and 5x5 blurs.

    A 3x3 preset chosen at 5x5 sits in the middle of zeros (the same map, a wider window);
    box blur and Gaussian have real 5x5 versions.
    """
    out = []
    for name in (*DEFAULT_KERNELS, "identity"):
        k = KERNELS[name]
        out.append({"name": name, "size": k.shape[0], "numbers": [list(r) for r in k.numbers],
                    "scale": k.scale_text() or "1", "about": k.about})
    out.append(_five("box-blur", [[1] * 5 for _ in range(5)], "1/25", "the mean of the 5x5 neighbourhood"))
    binom = [1, 4, 6, 4, 1]  # the binomial approximation of a Gaussian, sigma about 1
    out.append(_five("gaussian", [[a * b for b in binom] for a in binom], "1/256",
                     "a weighted mean where the centre counts most: a softer blur"))
    return out


def lab_image(image=None, size: int | None = LAB_SIDE) -> np.ndarray:
    """RGB uint8 (H, W, 3): the photo the lab works on (the sample photo by default)."""
    return prepare_image(image, size)


def lab_input(rgb: np.ndarray, mode: str = "grey") -> np.ndarray:
    """(C, H, W) float32: grey luma in [0, 1] (C = 1), or R, G, B / 255 (C = 3)."""
    if mode not in MODES:
        raise CnnlabError(f"mode must be 'grey' or 'rgb' (per channel), got {mode!r}")
    if mode == "grey":
        return to_gray(rgb)[None]
    return (np.asarray(rgb[..., :3], dtype=np.float32) / 255.0).transpose(2, 0, 1).copy()


def lab_compute(rgb: np.ndarray, weights, stride: int = 1, padding: str = "valid",
                mode: str = "grey") -> np.ndarray:
    """Feature map(s) (C, H', W') of one kernel on a photo: ``F.conv2d`` on each channel alone."""
    if padding not in ("valid", "same"):
        raise CnnlabError(f"padding must be 'valid' or 'same', got {padding!r}")
    x = lab_input(rgb, mode)
    return np.stack([cross_correlate(c, np.asarray(weights, dtype=np.float64), stride, padding).numpy()
                     for c in x])


def explain_pixel(rgb: np.ndarray, weights, stride: int, padding: str, mode: str,
                  c: int, y: int, x: int) -> dict[str, Any]:
    """The arithmetic of output (c, y, x): the input patch (zeros in the padding), the kernel,
    their products and the sum, as the page shows it on hover."""
    w = np.asarray(weights, dtype=np.float64)
    img = lab_input(rgb, mode)[c]
    left, _, top, _ = pads(img.shape, w.shape, stride, padding)
    k = w.shape[0]
    patch = np.zeros((k, k), np.float64)
    for m in range(k):
        for n in range(k):
            iy, ix = y * stride + m - top, x * stride + n - left
            if 0 <= iy < img.shape[0] and 0 <= ix < img.shape[1]:
                patch[m, n] = img[iy, ix]
    products = patch * w
    return {"patch": patch, "kernel": w, "products": products, "sum": float(products.sum()),
            "top_left": (y * stride - top, x * stride - left)}


def parse_cell(text: Any) -> float | None:
    """A kernel entry as typed: '2', '-0.5', '1e-2' or '1/16'; None when it is not a finite number."""
    s = str(text).strip().replace("\u2212", "-")
    if not s or s.lower().lstrip("+-") in ("nan", "inf", "infinity") or "_" in s:
        return None
    try:
        if s.count("/") == 1:
            a, b = (float(p) for p in s.split("/"))
            v = a / b
        else:
            v = float(s)
    except (ValueError, ZeroDivisionError):
        return None
    return v if math.isfinite(v) else None
