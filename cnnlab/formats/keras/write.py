"""Write a cnnlab model as a Keras 3 ``.keras`` file, without Keras installed.

A ``.keras`` file is a zip of ``metadata.json``, ``config.json`` (the architecture as Keras
serialises it) and ``model.weights.h5`` (each layer's variables at ``layers/<path>/vars/<i>``,
``<path>`` being Keras' snake_case class name with a counter). cnnlab writes those three
with JSON and h5py; ``keras.saving.load_model("model.keras")`` then rebuilds the model, with
the preprocessing inside (a Rescaling or Normalization layer first), so it takes raw RGB
pixels 0-255 like the ONNX export. Sequential where the model is a chain; a functional
graph with Add layers where it has residual blocks.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.data.normalize import Normalization
from cnnlab.errors import CnnlabError
from cnnlab.formats import pixel_kind
from cnnlab.formats.keras.layout import flat_perms, torch_to_keras
from cnnlab.formats.keras.read import keras_snake
from cnnlab.io.fs import atomic_path
from cnnlab.model import layers as L

KERAS_VERSION = "3.5.0"  # the format version written (Keras 3.x reads it)


def _act(a: str | None) -> str:
    return "linear" if a is None else a


def _layer_config(layer: L.Layer) -> tuple[str, dict[str, Any]]:
    """(Keras class name, config) for one cnnlab layer."""
    lst = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
    if isinstance(layer, L.Conv2D):
        return "Conv2D", {"filters": layer.filters, "kernel_size": lst(layer.kernel_size), "strides": lst(layer.strides),
                          "padding": layer.padding, "activation": _act(layer.activation), "use_bias": layer.use_bias,
                          "dilation_rate": lst(layer.dilation_rate)}
    if isinstance(layer, L.DepthwiseConv2D):
        return "DepthwiseConv2D", {"kernel_size": lst(layer.kernel_size), "strides": lst(layer.strides),
                                   "padding": layer.padding, "depth_multiplier": layer.depth_multiplier,
                                   "activation": _act(layer.activation), "use_bias": layer.use_bias}
    if isinstance(layer, L.SeparableConv2D):
        return "SeparableConv2D", {"filters": layer.filters, "kernel_size": lst(layer.kernel_size),
                                   "strides": lst(layer.strides), "padding": layer.padding,
                                   "activation": _act(layer.activation), "use_bias": layer.use_bias}
    if isinstance(layer, (L.MaxPooling2D, L.AveragePooling2D)):
        return type(layer).__name__, {"pool_size": lst(layer.pool_size), "strides": lst(layer._strides),
                                      "padding": layer.padding}
    if isinstance(layer, L.BlurPool2D):  # the same arithmetic: a frozen depthwise blur with Keras' 'same' zeros
        if layer.padding != "same":
            raise CnnlabError(f"layer {layer.name or 'BlurPool2D'} (BlurPool2D, padding reflect) has no Keras "
                              "equivalent: Keras pads with zeros; use padding: same, or export to ONNX")
        k, s = layer.filter_size, layer.strides
        return "DepthwiseConv2D", {"kernel_size": [k, k], "strides": [s, s], "padding": "same", "depth_multiplier": 1,
                                   "activation": "linear", "use_bias": False, "trainable": False}
    if isinstance(layer, (L.GlobalAveragePooling2D, L.GlobalMaxPooling2D)):
        return type(layer).__name__, {}
    if isinstance(layer, L.ZeroPadding2D):
        t, b, left, r = layer._pads()
        return "ZeroPadding2D", {"padding": [[t, b], [left, r]]}
    if isinstance(layer, L.BatchNormalization):
        return "BatchNormalization", {"axis": -1, "momentum": layer.momentum, "epsilon": layer.epsilon,
                                      "scale": layer.scale}
    if isinstance(layer, (L.Dropout, L.SpatialDropout2D)):
        return type(layer).__name__, {"rate": layer.rate}
    if isinstance(layer, L.Flatten):
        return "Flatten", {}
    if isinstance(layer, L.Dense):
        return "Dense", {"units": layer.units, "activation": _act(layer.activation), "use_bias": layer.use_bias}
    if isinstance(layer, L.Activation):
        return "Activation", {"activation": _act(layer.activation)}
    if isinstance(layer, L.ReLU):
        return "ReLU", {"max_value": layer.max_value, "negative_slope": layer.negative_slope,
                        "threshold": layer.threshold}
    if isinstance(layer, L.LeakyReLU):
        return "LeakyReLU", {"negative_slope": layer.negative_slope}
    if isinstance(layer, L.Softmax):
        return "Softmax", {"axis": -1}
    if isinstance(layer, L.Rescaling):
        return "Rescaling", {"scale": lst(layer.scale), "offset": lst(layer.offset)}
    if isinstance(layer, L.Normalization):
        if layer.stored:  # adapt()ed statistics: Keras keeps them as variables, not in the config
            return "Normalization", {"axis": -1, "mean": None, "variance": None}
        return "Normalization", {"axis": -1, "mean": lst(layer.mean), "variance": lst(layer.variance)}
    raise CnnlabError(f"layer type {type(layer).__name__} has no Keras equivalent cnnlab can write")


def _entry(cls: str, name: str, config: dict[str, Any]) -> dict[str, Any]:
    return {"module": "keras.layers", "class_name": cls, "config": {"name": name, "trainable": True,
                                                                    "dtype": "float32", **config},
            "registered_name": None}


def _preprocessing(normalization, c: int) -> tuple[str, dict[str, Any]]:
    """cnnlab's (pixel / 255 - mean) / std as one Keras layer taking raw pixels 0-255."""
    mean, std = list(normalization.mean), list(normalization.std)
    if all(m == 0 for m in mean) and len(set(std)) == 1:
        return "Rescaling", {"scale": 1.0 / (255.0 * std[0]), "offset": 0.0}
    return "Normalization", {"axis": -1, "mean": [255.0 * m for m in mean],
                             "variance": [(255.0 * s) ** 2 for s in std]}


class _Graph:
    """Builds Keras layer entries (functional or sequential) and the variables of each."""

    def __init__(self, functional: bool):
        self.functional = functional
        self.entries: list[dict[str, Any]] = []
        self.variables: list[tuple[str, list[np.ndarray]]] = []  # in model.layers order
        self.names: set[str] = set()

    def unique(self, name: str) -> str:
        base, i = name, 1
        while name in self.names:
            name = f"{base}_{i}"
            i += 1
        self.names.add(name)
        return name

    def add(self, cls: str, name: str, config: dict[str, Any], inputs: list[tuple[str, tuple]],
            variables: list[np.ndarray]) -> str:
        name = self.unique(name)
        e = _entry(cls, name, config)
        if self.functional:
            tensors = [{"class_name": "__keras_tensor__", "config": {"shape": [None, *shape], "dtype": "float32",
                                                                      "keras_history": [src, 0, 0]}}
                       for src, shape in inputs]
            e["name"] = name
            e["inbound_nodes"] = [{"args": [tensors] if len(tensors) > 1 else tensors, "kwargs": {}}]
        self.entries.append(e)
        self.variables.append((cls, variables))
        return name


def _state_of(model, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in model.state_dict().items() if k.startswith(prefix)}


def keras_config(model, normalization) -> tuple[dict[str, Any], list[tuple[str, list[np.ndarray]]]]:
    """(config.json's dict, [(Keras class, variables)] in model.layers order) for a cnnlab CNN."""
    spec = model.spec
    h, w, c = spec.input
    traced = model.traced
    functional = any(t.children for t in traced if not isinstance(t.layer, L.SeparableConv2D))
    g = _Graph(functional)
    perms = flat_perms(model)
    g.names.add("input_layer")
    inp = {"module": "keras.layers", "class_name": "InputLayer", "registered_name": None,
           "config": {"batch_shape": [None, h, w, c], "dtype": "float32", "sparse": False, "name": "input_layer"}}
    if functional:
        inp["name"] = "input_layer"
        inp["inbound_nodes"] = []
        g.variables.append(("InputLayer", []))
    g.entries.append(inp)
    cls, cfg = _preprocessing(normalization, c)
    cur = g.add(cls, "cnnlab_preprocessing", cfg, [("input_layer", spec.input)], [])
    shape = tuple(spec.input)

    def plain(name: str, layer: L.Layer, prefix: str, src: str, in_shape, perm=None) -> str:
        kcls, kcfg = _layer_config(layer)
        variables = torch_to_keras(layer, _state_of(model, prefix), perm)
        return g.add(kcls, name, kcfg, [(src, tuple(in_shape))], variables)

    for t in traced:
        prefix = f"layers.{t.name}."
        layer = t.layer
        if isinstance(layer, (L.Residual, L.ResidualBlock)):
            if isinstance(layer, L.Residual):
                main = [(n, lay, f"{prefix}main.{n}.") for n, lay in layer.main]
                short = [(n, lay, f"{prefix}shortcut.{n}.") for n, lay in layer.shortcut]
                act = None
            else:
                main = [(n, lay, f"{prefix}main.{n}.") for n, lay in layer._parts(t.input_shape)]
                short = [(n, lay, f"{prefix}shortcut.{n}.") for n, lay in layer._shortcut(t.input_shape)]
                act = layer.activation
            ends = []
            for branch in (main, short):
                src, s = cur, shape
                for n, lay, p in branch:
                    src = plain(f"{t.name}_{n}", lay, p, src, s)
                    s = lay.output_shape(s)
                ends.append((src, s))
            cur = g.add("Add", t.name if act is None else f"{t.name}_add", {}, ends, [])
            if act is not None:
                cur = g.add("Activation", t.name, {"activation": act}, [(cur, t.output_shape)], [])
        elif t.children and not isinstance(layer, L.SeparableConv2D):
            raise CnnlabError(f"layer {t.name!r} ({t.type}) has no Keras equivalent cnnlab can write")
        else:
            cur = plain(t.name, layer, prefix, cur, t.input_shape, perms.get(t.name))
        shape = t.output_shape

    if functional:
        config = {"module": "keras.src.models.functional", "class_name": "Functional", "registered_name": "Functional",
                  "config": {"name": spec.name, "trainable": True, "layers": g.entries,
                             "input_layers": ["input_layer", 0, 0], "output_layers": [cur, 0, 0]}}
    else:
        config = {"module": "keras", "class_name": "Sequential", "registered_name": None,
                  "config": {"name": spec.name, "trainable": True, "dtype": "float32", "layers": g.entries,
                             "build_input_shape": [None, h, w, c]}}
    return config, g.variables


def _weights_h5(variables: list[tuple[str, list[np.ndarray]]], names: list[str]) -> bytes:
    import h5py

    buf = io.BytesIO()
    counts: dict[str, int] = {}
    with h5py.File(buf, "w") as f:
        root = f.create_group("layers")
        for (cls, arrays), name in zip(variables, names):
            base = keras_snake(cls)
            path = base if base not in counts else f"{base}_{counts[base]}"
            counts[base] = counts.get(base, 0) + 1
            group = root.create_group(path).create_group("vars")
            group.attrs["name"] = name
            for i, a in enumerate(arrays):
                group.create_dataset(str(i), data=a)
        f.create_group("vars")
    return buf.getvalue()


def write_keras(model, meta: dict[str, Any], out: str | Path) -> Path:
    """Write ``model`` (a cnnlab CNN with its metadata) as a Keras 3 .keras file, atomically."""
    out = Path(out)
    c = model.spec.input[2]
    config, variables = keras_config(model, Normalization.from_dict(meta.get("normalization"), c))
    entries = [e for e in config["config"]["layers"]]
    if config["class_name"] == "Sequential":
        entries = [e for e in entries if e["class_name"] != "InputLayer"]
    names = [e["config"]["name"] for e in entries]
    metadata = {"keras_version": KERAS_VERSION, "date_saved": time.strftime("%Y-%m-%d@%H:%M:%S"),
                "cnnlab": {"classes": list(meta.get("classes") or []), "input": f"raw {pixel_kind(c)} pixels 0-255, (H, W, C)"}}
    with atomic_path(out) as tmp:
        with zipfile.ZipFile(tmp, "w") as z:
            z.writestr("metadata.json", json.dumps(metadata))
            z.writestr("config.json", json.dumps(config))
            z.writestr("model.weights.h5", _weights_h5(variables, names))
    return out
