"""ONNX export, and prediction with an exported file through onnxruntime.

The exported graph takes what an image file decodes to: ``pixels``, float32 of shape
(batch, height, width, 3) -- RGB values 0-255 (1 channel for a grayscale model), channels
last, the batch size free -- and returns ``probabilities`` (batch, classes). The preprocessing (scaling, per-channel mean and
std) and the final softmax/sigmoid are inside, so a user of onnxruntime (or any ONNX
runtime) needs nothing of cnnlab. The file's metadata (``metadata_props``) holds the class
names (JSON), the input size and resize policy, and the input layout in words.

torch 2.13's ``torch.onnx.export`` uses the torch.export-based ("dynamo") exporter by
default, which needs ``onnx`` and ``onnxscript``; the older TorchScript exporter still runs
(``dynamo=False``) but warns that it will be removed, so cnnlab uses the new one.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnlab.data.decode import BadImage, load_image
from cnnlab.data.normalize import Normalization
from cnnlab.errors import CnnlabError
from cnnlab.eval.predict import collect_files, prediction_rows
from cnnlab.formats import pixel_kind
from cnnlab.io.fs import atomic_path

OPSET = 18  # the exporter's own opset (17 is converted down with a warning); any runtime of 2023+ reads it
def input_layout(c: int) -> str:
    """The ``input_layout`` metadata entry of the ONNX file."""

    return (f"pixels: float32 (batch, height, width, {c}), {pixel_kind(c)} values 0-255 (channels last); "
            "output probabilities: float32 (batch, classes)")


class WithPreprocessing(nn.Module):
    """Raw pixels (N, H, W, C) 0-255 -> cnnlab's normalisation -> the CNN -> probabilities."""

    def __init__(self, model, normalization):
        super().__init__()
        self.model = model
        c = model.spec.input[2]
        mean = torch.tensor(normalization.mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        std = torch.tensor(normalization.std, dtype=torch.float32).reshape(1, -1, 1, 1)
        if mean.shape[1] == 1 and c > 1:
            mean, std = mean.expand(1, c, 1, 1), std.expand(1, c, 1, 1)
        # (p / 255 - mean) / std  ==  p * scale + offset
        self.register_buffer("scale", 1.0 / (255.0 * std))
        self.register_buffer("offset", -mean / std)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2) * self.scale + self.offset
        return self.model.probabilities(self.model(x))


def _need(module: str, extra: str = "onnx"):
    try:
        return __import__(module)
    except ImportError:
        raise CnnlabError(f"this needs {module}: pip install 'cnnlab[{extra}]'") from None


def export_onnx(model, meta: dict[str, Any], out: str | Path) -> Path:
    """Write ``model`` with its preprocessing as an ONNX file (dynamic batch), atomically."""
    _need("onnx")
    _need("onnxscript")
    import onnx

    out = Path(out)
    h, w, c = model.spec.input
    wrapped = WithPreprocessing(model.cpu().eval(), Normalization.from_dict(meta.get("normalization"), c)).eval()
    example = torch.rand(2, h, w, c) * 255
    batch = torch.export.Dim("batch", min=1, max=65536)
    quiet_log = logging.getLogger("torch.onnx")
    level = quiet_log.level
    quiet_log.setLevel(logging.ERROR)  # "torchvision is not installed, skipping nms": not our concern
    with atomic_path(out) as tmp, warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(wrapped, (example,), dynamo=True, opset_version=OPSET,
                                        input_names=["pixels"], output_names=["probabilities"],
                                        dynamic_shapes=({0: batch},), external_data=False)
        except Exception as e:  # the exporter's errors are long; the first line says what failed
            raise CnnlabError(f"ONNX export failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        proto = program.model_proto
        props = {"classes": json.dumps(list(meta.get("classes") or [])), "input_layout": input_layout(c),
                 "input_size": json.dumps([h, w, c]), "resize": str(meta.get("resize", "stretch")),
                 "producer": "cnnlab"}
        del proto.metadata_props[:]
        for k, v in props.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        onnx.save(proto, str(tmp))
    quiet_log.setLevel(level)
    return out


class OnnxModel:
    """An exported file opened with onnxruntime: metadata and a probabilities function."""

    def __init__(self, path: str | Path):
        ort = _need("onnxruntime")
        self.path = Path(path)
        if not self.path.is_file():
            raise CnnlabError(f"{self.path}: no such ONNX file")
        try:
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise CnnlabError(f"{self.path}: not a readable ONNX model ({str(e).splitlines()[0][:200]})") from None
        props = self.session.get_modelmeta().custom_metadata_map
        try:
            self.classes = list(json.loads(props["classes"]))
            self.input = tuple(json.loads(props["input_size"]))
        except (KeyError, ValueError):
            raise CnnlabError(f"{self.path}: an ONNX file without cnnlab's metadata (classes, input_size); "
                              "export it with `cnnlab export RUN --format onnx`") from None
        self.resize = props.get("resize", "stretch")
        self.input_name = self.session.get_inputs()[0].name

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """(N, H, W, C) uint8 or float pixels 0-255 -> (N, classes) float32."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(pixels, dtype=np.float32)})[0]


def predict_onnx(path, paths, *, top_k: int = 3, tta: bool = False, batch_size: int = 64) -> list[dict[str, Any]]:
    """`cnnlab predict model.onnx PATH...`: the same rows as for a run, computed by onnxruntime."""
    if top_k < 1:
        raise CnnlabError(f"--top-k must be at least 1, got {top_k}")
    m = OnnxModel(path)
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    files = collect_files(paths)
    if not files:
        raise CnnlabError(f"no image files found in {', '.join(map(str, paths)) or 'the given paths'}")
    h, w, c = m.input
    probs: dict[int, np.ndarray] = {}
    errors: dict[int, str] = {}
    readable = [i for i, (_, err) in enumerate(files) if not err]
    for s in range(0, len(readable), batch_size):
        arrays, idx = [], []
        for i in readable[s:s + batch_size]:
            try:
                arrays.append(load_image(files[i][0], (h, w), c, m.resize))
                idx.append(i)
            except BadImage as e:
                errors[i] = e.reason
        if arrays:
            x = np.stack(arrays)
            p = m.probabilities(x)
            if tta:
                p = (p + m.probabilities(x[:, :, ::-1])) / 2
            probs.update(zip(idx, p.astype(np.float64)))
    return prediction_rows(files, probs, errors, m.classes, top_k)
