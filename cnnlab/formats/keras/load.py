"""The whole model from a Keras file: CNN + metadata (classes, preprocessing), as cnnlab's commands use it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from cnnlab.errors import CnnlabError, SpecError
from cnnlab.formats.keras.architecture import spec_from_keras
from cnnlab.formats.keras.layout import load_keras_weights
from cnnlab.formats.keras.read import read_keras_file, refuse
from cnnlab.model import layers as L
from cnnlab.model.build import CNN

# ---------------------------------------------------------------------------------------
# The whole model: CNN + metadata (classes, preprocessing), as cnnlab's commands use it.
# ---------------------------------------------------------------------------------------


def preprocessing_inside(spec) -> str | None:
    """The name of a Rescaling/Normalization layer that starts the model, if any."""
    for name, layer in spec.layers:
        if isinstance(layer, (L.Rescaling, L.Normalization)):
            return name
        if not isinstance(layer, (L.Dropout, L.ZeroPadding2D)):
            return None
    return None


def class_names(path: Path, n: int, classes: list[str] | None, data_classes: list[str] | None,
                own: list[str] | None = None) -> tuple[list[str], str]:
    """(names, where they came from): --classes, the file's own (a .keras file `cnnlab export`
    wrote), classes.json beside the file, the data folder, or class_i."""
    if classes:
        if len(classes) != n:
            raise CnnlabError(f"--classes names {len(classes)} classes but {path} has {n} outputs")
        return list(classes), "--classes"
    if own and len(own) == n:
        return list(own), "the file's metadata.json"
    beside = path.with_name("classes.json")
    if beside.is_file():
        try:
            names = json.loads(beside.read_text(encoding="utf-8"))
        except (ValueError, OSError, UnicodeDecodeError) as e:
            raise CnnlabError(f"{beside}: not a readable JSON list of class names ({e})") from None
        if isinstance(names, dict):  # Keras' class_indices: {"cat": 0, "dog": 1}
            names = [k for k, _ in sorted(names.items(), key=lambda kv: kv[1])]
        if not isinstance(names, list) or len(names) != n:
            raise CnnlabError(f"{beside}: expected a list of {n} class names (the model's outputs)")
        return [str(x) for x in names], str(beside)
    if data_classes and len(data_classes) == n:
        return list(data_classes), "the data folder"
    return [f"class_{i}" for i in range(n)], "default"


def load_keras(path: str | Path, *, classes: list[str] | None = None, rescale: float | None = None,
               data_classes: list[str] | None = None, device: str | torch.device = "cpu", quiet: bool = False):
    """(CNN in eval mode, metadata) from a .keras or .h5 file, read without Keras.

    ``rescale`` scales pixels when the model has no Rescaling/Normalization layer of its
    own (default 1/255, Keras' ``ImageDataGenerator(rescale=1./255)``); ``classes`` names
    the outputs (else classes.json beside the file, else ``data_classes``, else class_i).
    """
    path = Path(path)
    kf = read_keras_file(path)
    spec = spec_from_keras(kf)
    try:
        model = CNN(spec)
    except SpecError as e:
        raise refuse(path, f"its layers do not fit together in cnnlab ({e})") from None
    load_keras_weights(model, kf)
    n = model.num_outputs
    if n == 1 and model.output_activation == "sigmoid":
        n = 2
    names, names_from = class_names(path, n, classes, data_classes, kf.classes)
    inside = preprocessing_inside(spec)
    c = spec.input[2]
    if inside is not None:
        if rescale is not None:
            print(f"cnnlab: {path.name}: --rescale is ignored, the model scales its own inputs "
                  f"(layer {inside!r})", file=sys.stderr)
        scale, how = 1.0, f"raw pixels 0-255 into the model's own {inside!r} layer"
    else:
        scale = 1 / 255 if rescale is None else float(rescale)
        how = f"pixels x {scale:.6g}" + (" (--rescale)" if rescale is not None else
                                          " (the default --rescale 1/255; the model has no Rescaling layer)")
    # cnnlab's normalisation is (pixel / 255 - mean) / std: std = 1 / (255 * scale) gives pixel * scale.
    norm = {"mean": [0.0] * c, "std": [1.0 / (255.0 * scale)] * c}
    meta = {"spec": spec.to_dict(), "classes": names, "input": list(spec.input), "resize": "stretch",
            "normalization": norm, "source": {"format": "keras", "file": str(path),
                                              "keras_version": kf.keras_version},
            "preprocessing": how, "classes_from": names_from, "rescale": scale}
    if not quiet:
        print(f"cnnlab: {path.name}: Keras model read ({len(spec.layers)} layers); inputs: {how}; "
              f"classes: {', '.join(names[:6])}{', ...' if len(names) > 6 else ''}"
              + (f" (from {names_from})" if names_from != "default" else " (pass --classes a,b,... to name them)"),
              file=sys.stderr)
    return model.to(device).eval(), meta
