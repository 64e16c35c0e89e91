"""Tiny model specs and run-comparison helpers shared by the training and fault tests."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from safetensors.torch import load_file

# Conv -> pool -> Dense: trains in a second or two on tests/imagegen.py images.
TINY = {
    "name": "tiny",
    "input": [32, 32, 3],
    "layers": [
        {"Conv2D": {"filters": 4, "kernel_size": 3, "activation": "relu"}},
        {"MaxPooling2D": {"pool_size": 4}},
        {"Flatten": {}},
        {"Dense": {"units": "classes", "activation": "softmax"}},
    ],
}

# The same with batch norm and dropout, so that the random state and running statistics matter
# (what resume and determinism tests need).
TINY_BN = {
    "name": "tiny",
    "input": [32, 32, 3],
    "layers": [
        {"Conv2D": {"filters": 4, "kernel_size": 3, "activation": "relu"}},
        {"BatchNormalization": {}},
        {"MaxPooling2D": {"pool_size": 4}},
        {"Dropout": {"rate": 0.2}},
        {"Flatten": {}},
        {"Dense": {"units": "classes", "activation": "softmax"}},
    ],
}


def same_weights(a: Path, b: Path) -> bool:
    """Two safetensors files hold exactly the same tensors (bit for bit)."""
    ta, tb = load_file(str(a)), load_file(str(b))
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def history(run: Path) -> list[dict[str, str]]:
    """history.csv without its timing columns, which differ from run to run."""
    with (run / "history.csv").open() as f:
        return [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")}
                for row in csv.DictReader(f)]
