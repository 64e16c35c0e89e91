"""A run directory, `runs/<name>/`, and how to use the model it holds.

What a training run writes (the contract every command relies on):

    runs/<name>/
      config.yaml               the resolved training config (data path, sizes, optimiser...)
      model.yaml                the model spec, classes filled in
      classes.json              class names, in label order
      split.json                the files of each split, so the split is reproducible
      history.csv               one row per epoch
      skipped.csv               files that could not be read, with the reason
      weights/best.safetensors  best weights + JSON metadata (spec, classes, input, ...)
      weights/last.safetensors  weights after the last completed epoch
      eval/<split>/             written by `cnnlab evaluate`
      report.html, curves.png   the report
      resume.safetensors        the full training state for --resume (safetensors + JSON)

``Run(path).load_model()`` rebuilds the model from a weights file alone (no pickle), and
``Run.preprocessor()`` turns image files into the exact tensors the model was trained on.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.data.decode import BadImage, load_image
from cnnlab.data.normalize import Normalization
from cnnlab.errors import CnnlabError

WEIGHT_NAMES = ("best", "last")


@dataclass(frozen=True)
class Preprocessor:
    """Image file -> normalised float tensor (C, H, W), exactly as in training."""

    size: tuple[int, int]  # (height, width)
    channels: int
    resize: str
    normalization: Normalization

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> "Preprocessor":
        h, w, c = meta["input"]
        return cls((h, w), c, meta.get("resize", "stretch"),
                   Normalization.from_dict(meta.get("normalization"), c))

    def load_uint8(self, path: str | Path) -> np.ndarray:
        """(H, W, C) uint8; raises BadImage."""
        return load_image(path, self.size, self.channels, self.resize)

    def to_tensor(self, arr: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
        return self.normalization.apply(x)

    def load(self, path: str | Path) -> torch.Tensor:
        return self.to_tensor(self.load_uint8(path))

    def load_batch(self, paths: list[str | Path]) -> tuple[torch.Tensor, list[int], dict[int, str]]:
        """Stack the readable files: (tensor, indices of those files, {index: error})."""
        tensors, ok, errors = [], [], {}
        for i, p in enumerate(paths):
            try:
                tensors.append(self.load(p))
                ok.append(i)
            except BadImage as e:
                errors[i] = e.reason
        if not tensors:
            c, (h, w) = self.channels, self.size
            return torch.empty(0, c, h, w), ok, errors
        return torch.stack(tensors), ok, errors


class Run:
    """A training run's directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise CnnlabError(f"{self.path}: no such run directory")
        if not (self.path / "weights").is_dir() and self.path.suffix != ".safetensors":
            raise CnnlabError(f"{self.path}: not a cnnlab run (it has no weights/ folder)")

    @property
    def name(self) -> str:
        return self.path.name

    def weights_path(self, which: str = "best") -> Path:
        """best, last, or a path to a .safetensors file."""
        if which in WEIGHT_NAMES:
            p = self.path / "weights" / f"{which}.safetensors"
        else:
            p = Path(which)
        if not p.is_file():
            raise CnnlabError(f"{p}: no such weights file (has this run finished an epoch?)")
        return p

    def load_model(self, which: str = "best", device: str | torch.device = "cpu"):
        """(model in eval mode, metadata) from the weights file alone."""
        from cnnlab.io.weights import load_weights

        path = self.weights_path(which)
        model, meta = load_weights(path, device=device)
        own = self.path / "classes.json"
        if "classes" in meta and own.is_file() and list(meta["classes"]) != self.classes:
            raise CnnlabError(f"{path}: a model of classes {', '.join(map(str, meta['classes']))}, but run "
                              f"{self.path} has classes {', '.join(self.classes)}; use the weights of this run")
        return model, meta

    def preprocessor(self, meta: dict[str, Any]) -> Preprocessor:
        return Preprocessor.from_meta(meta)

    @property
    def config(self) -> dict[str, Any]:
        import yaml

        p = self.path / "config.yaml"
        return yaml.safe_load(p.read_text()) if p.is_file() else {}

    @property
    def classes(self) -> list[str]:
        p = self.path / "classes.json"
        if p.is_file():
            return list(json.loads(p.read_text()))
        from cnnlab.io.weights import read_metadata

        return list(read_metadata(self.weights_path("best"))["classes"])

    def split(self) -> dict[str, list[list[Any]]]:
        """{split: [[path, label_index], ...]} as saved at training."""
        p = self.path / "split.json"
        d = json.loads(p.read_text()) if p.is_file() else {}
        return d.get("splits", d)  # DataIndex.to_json() nests the splits under "splits"

    def history(self) -> list[dict[str, float]]:
        p = self.path / "history.csv"
        if not p.is_file():
            return []
        with p.open(newline="") as f:
            return [{k: float(v) if v not in ("", None) else float("nan") for k, v in row.items()}
                    for row in csv.DictReader(f)]

    def eval_dir(self, split: str) -> Path:
        return self.path / "eval" / split
