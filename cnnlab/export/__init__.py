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

import numpy as np
import torch

from cnnlab.errors import CnnlabError
from cnnlab.export.onnx import OnnxModel, export_onnx
from cnnlab.export.samples import sample_images
from cnnlab.formats import pixel_kind
from cnnlab.formats.keras import write_keras
from cnnlab.io.fs import check_can_write
from cnnlab.run import Opened, open_any

FORMATS = {"onnx": ".onnx", "keras": ".keras"}


def default_out(src: Opened, fmt: str) -> Path:
    """RUN/export/NAME.onnx for a run; beside the file (model.onnx) for a model file."""
    if src.run is not None:
        return src.path / "export" / f"{src.name}{FORMATS[fmt]}"
    return src.path.with_suffix(FORMATS[fmt])


@dataclass
class Exported:
    path: Path
    format: str
    max_difference: float | None  # None: no checker installed (Keras)
    images: int
    checked_with: str
    input: tuple[int, int, int]  # (height, width, channels) the file takes


def pixels_layout(input: tuple[int, int, int] | list[int]) -> str:
    """What an exported file takes, in words: "raw RGB pixels 0-255, shape (batch, 32, 32, 3)"."""
    h, w, c = input
    return f"raw {pixel_kind(c)} pixels 0-255, shape (batch, {h}, {w}, {c}), channels last"


def cnnlab_probabilities(src: Opened, images: np.ndarray) -> np.ndarray:
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

    if fmt not in FORMATS:
        raise CnnlabError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    src = open_any(run, weights)
    out = Path(out) if out is not None else default_out(src, fmt)
    if out.suffix.lower() != FORMATS[fmt]:
        kind = {"onnx": "an ONNX", "keras": "a Keras"}[fmt]
        raise CnnlabError(f"--out {out}: {kind} file's name must end in {FORMATS[fmt]}")
    if out.is_dir():
        raise CnnlabError(f"--out {out}: is a folder; give a file name ending in {FORMATS[fmt]}")
    check_can_write(out, "--out")  # the file itself is written atomically (cnnlab.io.fs.atomic_path)
    images = sample_images(src, check_images)
    ours = cnnlab_probabilities(src, images)
    if fmt == "onnx":
        export_onnx(src.model, src.meta, out)
        theirs, checker = OnnxModel(out).probabilities(images), "onnxruntime"
    else:
        write_keras(src.model, src.meta, out)
        theirs, checker = keras_probabilities(out, images), "Keras"
    diff = None if theirs is None else float(np.abs(np.asarray(theirs, dtype=np.float64) - ours).max())
    return Exported(out, fmt, diff, len(images), checker, tuple(src.model.spec.input))
