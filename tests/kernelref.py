"""The oracle for the kernel lab: torch's conv2d on a photo, with Keras' "same" padding by hand."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

EDGE = [[0, -1, 0], [-1, 4, -1], [0, -1, 0]]
SOBEL_X = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]


def reference(rgb: np.ndarray, kernel, stride: int, padding: str, mode: str) -> np.ndarray:
    """(C, H', W'): grey luma (ITU-R 601) or each channel alone, in [0, 1], through F.conv2d."""
    x = torch.tensor(rgb, dtype=torch.float32) / 255
    if mode == "grey":
        x = (x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114)[None]
    else:
        x = x.permute(2, 0, 1)
    w = torch.tensor(np.asarray(kernel, dtype=np.float64), dtype=torch.float32)
    k = w.shape[0]
    if padding == "same":  # TensorFlow: ceil(n / s) outputs, the odd zero after
        pad = []
        for n in (x.shape[2], x.shape[1]):  # width, then height, as F.pad wants
            total = max((math.ceil(n / stride) - 1) * stride + k - n, 0)
            pad += [total // 2, total - total // 2]
        x = F.pad(x, pad)
    return F.conv2d(x[:, None], w[None, None], stride=stride)[:, 0].numpy()
