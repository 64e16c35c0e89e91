"""`cnnlab export`: a trained model as ONNX or Keras, checked against cnnlab's own output.

    from cnnlab.export import export
    result = export("runs/cats", "onnx")          # runs/cats/export/cats.onnx
    result.max_difference                         # largest |p_onnx - p_cnnlab| on sample images

Both formats take raw pixels 0-255, channels last (batch, height, width, channels: 3 for RGB,
1 for a grayscale model; :func:`pixels_layout` says which) and give class probabilities:
the preprocessing of training and the final softmax are inside the file.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.errors import CnnlabError
from cnnlab.io.fs import check_can_write

FORMATS = {"onnx": ".onnx", "keras": ".keras"}


@dataclass
class Source:
    """The model to export and where its sample images come from."""

    path: Path  # the run directory or the model file
    model: Any
    meta: dict[str, Any]
    run: Any = None  # cnnlab.run.Run, or None for a model file

    @property
    def name(self) -> str:
        return self.run.name if self.run is not None else self.path.stem

    def preprocessor(self):
        from cnnlab.run import Preprocessor

        return Preprocessor.from_meta(self.meta)

    def sample_paths(self, n: int) -> list[str]:
        if self.run is None:
            return []
        split = self.run.split()
        for name in ("test", "val", "train"):
            items = [p for p, _ in (split.get(name) or []) if Path(p).is_file()]
            if items:
                step = max(1, len(items) // n)
                return items[::step][:n]
        return []

    def default_out(self, fmt: str) -> Path:
        if self.run is not None:
            return self.run.path / "export" / f"{self.name}{FORMATS[fmt]}"
        return self.path.with_suffix(FORMATS[fmt])


@dataclass
class Exported:
    path: Path
    format: str
    max_difference: float | None  # None: no checker installed (Keras)
    images: int
    checked_with: str
    input: tuple[int, int, int]  # (height, width, channels) the file takes


def pixel_kind(channels: int) -> str:
    """"grayscale" for a 1-channel model, else "RGB": what the exported file's pixels are."""
    return "grayscale" if channels == 1 else "RGB"


def pixels_layout(input: tuple[int, int, int] | list[int]) -> str:
    """What an exported file takes, in words: "raw RGB pixels 0-255, shape (batch, 32, 32, 3)"."""
    h, w, c = input
    return f"raw {pixel_kind(c)} pixels 0-255, shape (batch, {h}, {w}, {c}), channels last"


def open_source(run, weights: str = "best") -> Source:
    from cnnlab.io.models import is_model_file, open_model
    from cnnlab.run import Run

    if is_model_file(run):
        f = open_model(run)
        return Source(f.path, f.model, f.meta)
    r = run if isinstance(run, Run) else Run(run)
    model, meta = r.load_model(weights)
    return Source(r.path, model, meta, r)


def cnnlab_probabilities(src: Source, images: np.ndarray) -> np.ndarray:
    import torch

    pre = src.preprocessor()
    x = torch.stack([pre.to_tensor(a) for a in images])
    return src.model.predict_proba(x).numpy()


def keras_probabilities(path: Path, images: np.ndarray) -> np.ndarray | None:
    """Keras' own predictions for the exported file, or None when Keras is not installed."""
    if importlib.util.find_spec("keras") is None:
        return None
    os.environ.setdefault("KERAS_BACKEND", "torch")  # never pulls TensorFlow in on its own
    import keras

    m = keras.saving.load_model(str(path), compile=False)
    p = np.asarray(m.predict(images.astype("float32"), verbose=0))
    if p.shape[1] == 1:  # one sigmoid unit: cnnlab reports [1 - p, p]
        p = np.concatenate([1 - p, p], axis=1)
    return p


def export(run, fmt: str, out: str | Path | None = None, weights: str = "best", check_images: int = 8) -> Exported:
    """Export a run's (or a model file's) model as ``fmt`` (onnx or keras) and check it."""
    from cnnlab.export.onnx import sample_images

    if fmt not in FORMATS:
        raise CnnlabError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    src = open_source(run, weights)
    out = Path(out) if out is not None else src.default_out(fmt)
    if out.suffix.lower() != FORMATS[fmt]:
        kind = {"onnx": "an ONNX", "keras": "a Keras"}[fmt]
        raise CnnlabError(f"--out {out}: {kind} file's name must end in {FORMATS[fmt]}")
    if out.is_dir():
        raise CnnlabError(f"--out {out}: is a folder; give a file name ending in {FORMATS[fmt]}")
    check_can_write(out, "--out")  # the file itself is written atomically (cnnlab.io.fs.atomic_path)
    images = sample_images(src, check_images)
    ours = cnnlab_probabilities(src, images)
    if fmt == "onnx":
        from cnnlab.export.onnx import OnnxModel, export_onnx

        export_onnx(src.model, src.meta, out)
        theirs, checker = OnnxModel(out).probabilities(images), "onnxruntime"
    else:
        from cnnlab.export.keras import write_keras

        write_keras(src.model, src.meta, out)
        theirs, checker = keras_probabilities(out, images), "Keras"
    diff = None if theirs is None else float(np.abs(np.asarray(theirs, dtype=np.float64) - ours).max())
    return Exported(out, fmt, diff, len(images), checker, tuple(src.model.spec.input))
