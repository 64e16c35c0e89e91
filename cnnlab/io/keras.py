"""Keras model files, read and written without Keras: ``.keras`` (Keras 3) and legacy ``.h5``.

Reading uses JSON and h5py only: the architecture comes from the file's JSON config and
is mapped onto cnnlab's own layers (which already use Keras' names, shapes and 'same'
padding); the weights are plain HDF5 arrays. Nothing in the file is ever executed, so a
``Lambda`` layer (Python code) or a custom class is refused with a sentence naming it.

The two layouts (checked against files Keras 3 itself writes, see tests/test_keras_io.py):

* ``.keras`` -- a zip of ``metadata.json``, ``config.json`` (``{"class_name": "Sequential"
  | "Functional", "config": {"layers": [...]}}``) and ``model.weights.h5``, where layer
  ``i`` of the model keeps its variables at ``layers/<path>/vars/0, 1, ...`` (the group's
  ``name`` attribute is the layer's name; ``<path>`` is Keras' own per-class counter).
* legacy ``.h5`` -- one HDF5 file: the config as JSON in the ``model_config`` attribute
  and, under ``model_weights/<layer name>``, the arrays listed in order by the group's
  ``weight_names`` attribute. TF-Keras 2 (the lecture's ``ModelCheckpoint("model.h5")``)
  and Keras 3 write the same layout, with small config differences handled below.

Keras keeps tensors channels-last; cnnlab computes channels-first. Kernels are transposed
((kh, kw, in, out) -> (out, in, kh, kw)) and a Dense after Flatten has its rows reordered
from Keras' (h, w, c) flatten order to torch's (c, h, w), so the numbers are Keras' own.
"""

from __future__ import annotations

import dataclasses
import io
import json
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.errors import CnnlabError, WeightsError
from cnnlab.model import layers as L

from cnnlab.io.models import KERAS_SUFFIXES as SUFFIXES

MAX_CONFIG_BYTES = 64 << 20  # a config.json larger than this is not a CNN's description
MAX_WEIGHTS_BYTES = 4 << 30  # nor are weights beyond 4 GiB for the models cnnlab builds
# Augmentation layers do nothing at inference (Keras skips them in predict), so they are dropped.
AUGMENTATION = {"RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast",
                "RandomBrightness", "GaussianNoise", "GaussianDropout", "RandomErasing", "RandomHue",
                "RandomSaturation", "RandomSharpness", "RandomColorJitter", "RandomGrayscale"}
CODE_LAYERS = {"Lambda", "TFOpLambda", "SlicingOpLambda", "TorchModuleWrapper", "JaxLayer", "FlaxLayer"}


def is_keras_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in SUFFIXES


@dataclass
class KerasFile:
    """What a Keras model file holds: its config (JSON) and weights by layer name."""

    path: Path
    config: dict[str, Any]
    weights: dict[str, list[np.ndarray]]
    keras_version: str = ""
    classes: list[str] | None = None  # the class names `cnnlab export` writes into metadata.json


# ---------------------------------------------------------------------------------------
# Reading the two file layouts.
# ---------------------------------------------------------------------------------------


def _refuse(path: Path, why: str) -> WeightsError:
    return WeightsError(f"{path}: {why}")


def _sniff(head: bytes) -> str:
    if head[:1] == b"\x80" or head[:2] in (b"(d", b"(l", b"}q", b"]q"):
        return "a Python pickle (which cnnlab never loads, because unpickling can run code)"
    if head[:2] == b"PK":
        return "a zip archive"
    if head[:8] == b"\x89HDF\r\n\x1a\n":
        return "an HDF5 file"
    return "neither a Keras .keras zip nor an HDF5 .h5 file"


def _h5py():
    try:
        import h5py
    except ImportError:
        raise CnnlabError("reading Keras files needs h5py: pip install 'cnnlab[keras]'") from None
    return h5py


def _text(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def _json(path: Path, text: str | bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise _refuse(path, f"its {what} is not valid JSON (truncated or corrupt?)") from None
    if not isinstance(data, dict):
        raise _refuse(path, f"its {what} is not a Keras model config")
    return data


def keras_snake(name: str) -> str:
    """Keras' object paths: Conv2D -> conv2d, BatchNormalization -> batch_normalization, ReLU -> re_lu."""
    import re

    s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", s).lower()


def _object_paths(config: dict[str, Any]) -> dict[str, str]:
    """{path in model.weights.h5: layer name}, as Keras numbers them: the snake_case class name
    plus a counter, over the model's layers (a Sequential's InputLayer is not one of them).
    Used when a file's groups do not carry the layer's name as an attribute."""
    inner = config.get("config", {})
    layers = inner if isinstance(inner, list) else inner.get("layers", [])
    sequential = _class(config) == "Sequential"
    counts: dict[str, int] = {}
    out = {}
    for e in layers:
        if sequential and _class(e) == "InputLayer":
            continue
        base = keras_snake(_class(e))
        out[base if base not in counts else f"{base}_{counts[base]}"] = str(
            e.get("name") or (e.get("config") or {}).get("name"))
        counts[base] = counts.get(base, 0) + 1
    return out


def _weights_v3(h5, paths: dict[str, str]) -> dict[str, list[np.ndarray]]:
    """model.weights.h5 of a .keras file: layers/<path>/vars/<i>, the group named by its attribute."""
    out: dict[str, list[np.ndarray]] = {}
    root = h5.get("layers")
    if root is None:
        return out
    for key in root:
        group = root[key]
        vars_ = group.get("vars")
        if vars_ is None:
            continue
        name = _text(vars_.attrs["name"]) if "name" in vars_.attrs else paths.get(key, key)
        arrays = [np.asarray(vars_[str(i)]) for i in range(len(vars_))]
        if arrays:
            out[name] = arrays
    return out


def _read_keras_zip(path: Path) -> KerasFile:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise _refuse(path, f"not a readable .keras zip ({e})") from None
    with zf:
        infos = {i.filename: i for i in zf.infolist()}
        if "config.json" not in infos:
            raise _refuse(path, "a zip without config.json, so not a Keras 3 .keras model")
        total = sum(i.file_size for i in infos.values())
        cfg_info = infos["config.json"]
        if cfg_info.file_size > MAX_CONFIG_BYTES or total > MAX_WEIGHTS_BYTES + MAX_CONFIG_BYTES:
            raise _refuse(path, f"refused: it unpacks to {total / 2**20:,.0f} MiB, far more than a model "
                                "file holds (a zip bomb?)")
        config = _json(path, _read_capped(zf, cfg_info, MAX_CONFIG_BYTES, path), "config.json")
        meta_info = infos.get("metadata.json")
        version, own_classes = "", None
        if meta_info is not None and meta_info.file_size < 1 << 20:
            metadata = _json(path, _read_capped(zf, meta_info, 1 << 20, path), "metadata.json")
            version = str(metadata.get("keras_version", ""))
            ours = metadata.get("cnnlab")
            names = ours.get("classes") if isinstance(ours, dict) else None
            if isinstance(names, list) and names and all(isinstance(x, str) for x in names):
                own_classes = names
        weights: dict[str, list[np.ndarray]] = {}
        w_info = infos.get("model.weights.h5")
        if w_info is not None:
            raw = _read_capped(zf, w_info, MAX_WEIGHTS_BYTES, path)
            h5py = _h5py()
            try:
                with h5py.File(io.BytesIO(raw), "r") as h5:
                    weights = _weights_v3(h5, _object_paths(config))
            except OSError as e:
                raise _refuse(path, f"its model.weights.h5 cannot be read ({e})") from None
        elif any(n.endswith(".npz") or n == "model.weights.npz" for n in infos):
            raise _refuse(path, "its weights are not in model.weights.h5 (an unsupported .keras variant)")
    return KerasFile(path, config, weights, version, own_classes)


def _read_capped(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, path: Path) -> bytes:
    """The entry's bytes, stopping at ``limit`` whatever its header claims (zip bombs lie)."""
    try:
        with zf.open(info) as f:
            data = f.read(limit + 1)
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as e:
        raise _refuse(path, f"its {info.filename} cannot be unpacked ({e})") from None
    if len(data) > limit:
        raise _refuse(path, f"refused: its {info.filename} unpacks to more than {limit / 2**20:,.0f} MiB "
                            "(a zip bomb?)")
    return data


def _read_legacy_h5(path: Path) -> KerasFile:
    h5py = _h5py()
    try:
        h5 = h5py.File(path, "r")
    except OSError as e:
        raise _refuse(path, f"cannot be read as HDF5 (truncated or corrupt? {e})") from None
    with h5:
        if "model_config" not in h5.attrs:  # save_weights() files (Keras 2 or 3) have no architecture
            raise _refuse(path, "an HDF5 file without a model config (weights only, from save_weights?); "
                                "save the whole model with model.save('model.keras')")
        try:
            config = _json(path, _text(h5.attrs["model_config"]), "model_config")
            group = h5["model_weights"] if "model_weights" in h5 else h5
            weights: dict[str, list[np.ndarray]] = {}
            for lname in [_text(n) for n in group.attrs.get("layer_names", [])]:
                g = group[lname]
                names = [_text(n) for n in g.attrs.get("weight_names", [])]
                arrays = [np.asarray(g[n]) for n in names]
                if arrays:
                    weights[lname] = arrays
            version = _text(h5.attrs.get("keras_version", ""))
        except (OSError, KeyError, ValueError) as e:
            raise _refuse(path, f"its weights cannot be read (truncated or corrupt? {e})") from None
    return KerasFile(path, config, weights, version)


def read_keras_file(path: str | Path) -> KerasFile:
    """The config and the weights of a .keras or legacy .h5 file; raises WeightsError."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such model file")
    try:
        head = path.open("rb").read(8)
    except OSError as e:
        raise WeightsError(f"{path}: cannot be read ({e.strerror})") from None
    if head[:2] == b"PK":
        return _read_keras_zip(path)
    if head[:8] == b"\x89HDF\r\n\x1a\n":
        return _read_legacy_h5(path)
    raise WeightsError(f"{path}: refused: it is {_sniff(head)}, not a Keras model file")


# ---------------------------------------------------------------------------------------
# Config -> cnnlab spec.
# ---------------------------------------------------------------------------------------


@dataclass
class _Node:
    name: str
    cls: str
    config: dict[str, Any]
    inputs: list[str] = field(default_factory=list)


def _class(entry: dict[str, Any]) -> str:
    return str(entry.get("class_name", ""))


def _history(obj: Any) -> list[str]:
    """Names of the layers whose outputs a Keras 3 node's args reference (in order)."""
    out: list[str] = []
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            out.append(str(obj["config"]["keras_history"][0]))
        else:
            for v in obj.values():
                out += _history(v)
    elif isinstance(obj, list):
        for v in obj:
            out += _history(v)
    return out


def _node_inputs(source: Path, entry: dict[str, Any]) -> list[str]:
    nodes = entry.get("inbound_nodes") or []
    if len(nodes) > 1:
        raise _refuse(source, f"layer {entry.get('name')!r} is used {len(nodes)} times (a shared layer), "
                              "which cnnlab's models cannot express")
    if not nodes:
        return []
    node = nodes[0]
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        return _history(node.get("args", []))
    return [str(t[0]) for t in node]  # Keras 2: [[name, node_index, tensor_index, kwargs], ...]


def _input_shape(source: Path, cfg: dict[str, Any], name: str) -> tuple[int, int, int]:
    shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
    if shape is None and cfg.get("shape") is not None:
        shape = [None, *cfg["shape"]]
    if shape is None:
        raise _refuse(source, f"layer {name!r}: the model's input shape is not in its config "
                              "(build the model with keras.Input((H, W, C)) before saving)")
    dims = list(shape)[1:]
    if len(dims) != 3 or not all(isinstance(d, int) and d > 0 for d in dims):
        raise _refuse(source, f"the model's input shape {tuple(shape)} is not a fixed (height, width, "
                              "channels) image size, which cnnlab needs")
    return (dims[0], dims[1], dims[2])


def _layers_list(source: Path, config: dict[str, Any]) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    cls = _class(config)
    inner = config.get("config", {})
    if cls not in ("Sequential", "Functional", "Model"):
        if cls in CODE_LAYERS or config.get("registered_name") not in (None, cls):
            raise _refuse(source, f"the model is a custom class {cls!r}, whose code cnnlab never runs")
        raise _refuse(source, f"its top-level object is a {cls or 'something'!r}, not a Keras Sequential "
                              "or functional model")
    layers = inner if isinstance(inner, list) else inner.get("layers")
    if not isinstance(layers, list) or not layers:
        raise _refuse(source, "its config lists no layers")
    return cls, layers, inner if isinstance(inner, dict) else {}


def _check_code(source: Path, entry: dict[str, Any]) -> None:
    cls = _class(entry)
    name = (entry.get("config") or {}).get("name", entry.get("name", "?"))
    if cls in CODE_LAYERS:
        raise _refuse(source, f"refused: layer {name!r} is a {cls} layer (Python code inside the file), "
                              "which cnnlab never runs; rebuild it from standard layers")
    registered = entry.get("registered_name")
    module = str(entry.get("module") or "keras")
    if (registered not in (None, cls) and not str(registered).startswith("keras")) or not module.startswith("keras"):
        raise _refuse(source, f"refused: layer {name!r} is the custom object {registered or cls!r}, "
                              "whose code cnnlab does not have and never loads")


def _is_augmentation_model(entry: dict[str, Any]) -> bool:
    if _class(entry) not in ("Sequential", "Functional"):
        return False
    inner = entry.get("config", {})
    layers = inner if isinstance(inner, list) else inner.get("layers", [])
    return all(_class(e) in AUGMENTATION | {"InputLayer"} for e in layers)


def _graph(source: Path, cls: str, layers: list[dict[str, Any]], inner: dict[str, Any]):
    """(input shape, [_Node]) in order, a functional graph turned into a chain with Residuals."""
    for e in layers:
        _check_code(source, e)
    if cls == "Sequential":
        nodes, shape = [], None
        for e in layers:
            cfg = e.get("config", {})
            if _class(e) == "InputLayer":
                shape = _input_shape(source, cfg, cfg.get("name", "input"))
                continue
            if shape is None and ("batch_input_shape" in cfg or "batch_shape" in cfg):
                shape = _input_shape(source, cfg, cfg.get("name", "?"))
            nodes.append(_Node(str(cfg.get("name", "")), _class(e), cfg))
        if shape is None:
            build = (inner.get("build_input_shape") or {})
            if isinstance(build, list):
                shape = _input_shape(source, {"batch_shape": build}, "input")
            else:
                raise _refuse(source, "the model's input shape is not in its config (build the model "
                                      "with keras.Input((H, W, C)) before saving)")
        return shape, nodes

    by_name: dict[str, _Node] = {}
    order: list[str] = []
    for e in layers:
        cfg = e.get("config", {})
        name = str(e.get("name") or cfg.get("name"))
        by_name[name] = _Node(name, _class(e), cfg, _node_inputs(source, e))
        order.append(name)

    def endpoints(key: str) -> list[str]:
        v = inner.get(key) or []
        if v and isinstance(v[0], str):
            v = [v]  # Keras 3 writes a single input as ["name", 0, 0]
        return [str(t[0]) for t in v]

    ins, outs = endpoints("input_layers"), endpoints("output_layers")
    if len(ins) != 1 or len(outs) != 1:
        raise _refuse(source, f"the model has {len(ins)} inputs and {len(outs)} outputs; cnnlab reads "
                              "models with one image input and one output")
    if by_name[ins[0]].cls != "InputLayer":
        raise _refuse(source, f"its input {ins[0]!r} is not an InputLayer")
    shape = _input_shape(source, by_name[ins[0]].config, ins[0])
    users: dict[str, list[str]] = {n: [] for n in order}
    for n in order:
        for i in by_name[n].inputs:
            if i not in users:
                raise _refuse(source, f"layer {n!r} takes the output of {i!r}, which the model does not have")
            users[i].append(n)

    def follow(t: str, chain: list[_Node], in_branch: bool) -> tuple[list[_Node], str, str | None]:
        """Walk forward from tensor t: (nodes, last tensor, the Add it reached or None)."""
        while True:
            us = users[t]
            if not us or t == outs[0] and not in_branch:
                if us:
                    raise _refuse(source, f"the output of {t!r} is used after the model's output")
                return chain, t, None
            if len(us) == 1:
                u = by_name[us[0]]
                if len(u.inputs) > 1:
                    return chain, t, u.name
                chain.append(u)
                t = u.name
                continue
            if len(us) != 2:
                raise _refuse(source, f"the output of {t!r} feeds {len(us)} layers ({', '.join(us)}); "
                                      "cnnlab reads chains and two-branch residual blocks (Add)")
            if in_branch:
                raise _refuse(source, f"a branch inside the residual block after {t!r} branches again, "
                                      "which cnnlab cannot express")
            branches = []
            for u in us:
                if len(by_name[u].inputs) > 1:
                    branches.append(([], t, u))
                else:
                    branches.append(follow(u, [by_name[u]], True))
            merges = {b[2] for b in branches}
            merge = merges.pop() if len(merges) == 1 else None
            if merge is None or by_name[merge].cls != "Add" or sorted(by_name[merge].inputs) != sorted(
                    b[1] for b in branches):
                what = by_name[merge].cls if merge else "different layers"
                raise _refuse(source, f"the two branches from {t!r} meet in {what!r}; cnnlab reads "
                                      "residual blocks that join with Add")
            main, short = sorted(branches, key=lambda b: -len(b[0]))
            add = by_name[merge]
            chain.append(_Node(add.name, "Residual", {"main": main[0], "shortcut": short[0]}))
            t = add.name

    chain, end, merge = follow(ins[0], [], False)
    if merge is not None:
        raise _refuse(source, f"layer {merge!r} ({by_name[merge].cls}) joins tensors cnnlab cannot "
                              "trace back to one branch point")
    if end != outs[0]:
        raise _refuse(source, f"the walk from the input ends at {end!r}, not at the output {outs[0]!r}")
    return shape, chain


def _activation(source: Path, name: str, v: Any) -> str | None:
    if isinstance(v, dict):  # Keras 3 may serialise an activation as an object
        v = v.get("config", {}).get("name") if v.get("class_name") == "function" else v.get("class_name")
    if v in (None, "linear"):
        return None
    if v not in L.ACTIVATIONS:
        raise _refuse(source, f"layer {name!r}: activation {v!r} is not one cnnlab has "
                              f"({', '.join(L.ACTIVATIONS)})")
    return str(v)


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _flat_values(arrays: list[np.ndarray], i: int) -> tuple[float, ...]:
    return tuple(float(x) for x in np.asarray(arrays[i], dtype=np.float64).reshape(-1))


def _layer(source: Path, node: _Node, weights: dict[str, list[np.ndarray]]) -> L.Layer | None:
    """The cnnlab layer for one Keras layer config (None: nothing at inference)."""
    c, cls, name = node.config, node.cls, node.name
    where = f"layer {name!r} ({cls})"

    def refuse(why: str) -> WeightsError:
        return _refuse(source, f"{where}: {why}")

    if c.get("data_format") not in (None, "channels_last"):
        raise refuse(f"data_format {c['data_format']!r}; cnnlab reads channels_last models")
    act = lambda: _activation(source, name, c.get("activation"))  # noqa: E731
    try:
        if cls == "Conv2D":
            if c.get("groups", 1) != 1:
                raise refuse(f"groups={c['groups']} (grouped convolution) is not supported")
            return L.Conv2D(int(c["filters"]), _pair(c["kernel_size"]), _pair(c.get("strides", 1)),
                            c.get("padding", "valid"), act(), bool(c.get("use_bias", True)),
                            _pair(c.get("dilation_rate", 1)), name=name)
        if cls == "DepthwiseConv2D":
            if _pair(c.get("dilation_rate", 1)) != (1, 1):
                raise refuse("a dilated DepthwiseConv2D is not supported")
            return L.DepthwiseConv2D(_pair(c["kernel_size"]), _pair(c.get("strides", 1)), c.get("padding", "valid"),
                                     int(c.get("depth_multiplier", 1)), act(), bool(c.get("use_bias", True)),
                                     name=name)
        if cls == "SeparableConv2D":
            if int(c.get("depth_multiplier", 1)) != 1 or _pair(c.get("dilation_rate", 1)) != (1, 1):
                raise refuse("depth_multiplier or dilation other than 1 is not supported")
            return L.SeparableConv2D(int(c["filters"]), _pair(c["kernel_size"]), _pair(c.get("strides", 1)),
                                     c.get("padding", "valid"), act(), bool(c.get("use_bias", True)), name=name)
        if cls in ("MaxPooling2D", "AveragePooling2D", "MaxPool2D", "AvgPool2D"):
            kind = L.MaxPooling2D if cls.startswith("Max") else L.AveragePooling2D
            strides = c.get("strides")
            return kind(_pair(c.get("pool_size", 2)), None if strides is None else _pair(strides),
                        c.get("padding", "valid"), name=name)
        if cls in ("GlobalAveragePooling2D", "GlobalMaxPooling2D", "GlobalAvgPool2D", "GlobalMaxPool2D"):
            if c.get("keepdims"):
                raise refuse("keepdims=True is not supported")
            return (L.GlobalMaxPooling2D if "Max" in cls else L.GlobalAveragePooling2D)(name=name)
        if cls == "BatchNormalization":
            axis = c.get("axis", -1)
            axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
            if axis not in (-1, 3, 1) or not c.get("center", True):
                raise refuse("only the channel axis with center=True is supported")
            return L.BatchNormalization(float(c.get("momentum", 0.99)), float(c.get("epsilon", 1e-3)),
                                        bool(c.get("scale", True)), name=name)
        if cls == "Dropout":
            return L.Dropout(float(c["rate"]), name=name)
        if cls == "SpatialDropout2D":
            return L.SpatialDropout2D(float(c["rate"]), name=name)
        if cls == "Flatten":
            return L.Flatten(name=name)
        if cls == "Dense":
            return L.Dense(int(c["units"]), act(), bool(c.get("use_bias", True)), name=name)
        if cls == "Activation":
            return L.Activation(act(), name=name)
        if cls == "ReLU":
            return L.ReLU(c.get("max_value"), float(c.get("negative_slope", 0.0)),
                          float(c.get("threshold", 0.0)), name=name)
        if cls == "LeakyReLU":
            return L.LeakyReLU(float(c.get("negative_slope", c.get("alpha", 0.3))), name=name)
        if cls == "Softmax":
            if c.get("axis", -1) not in (-1, [-1]):
                raise refuse(f"softmax over axis {c['axis']} is not supported")
            return L.Softmax(name=name)
        if cls == "ZeroPadding2D":
            return L.ZeroPadding2D(c.get("padding", 1), name=name)
        if cls == "Rescaling":
            return L.Rescaling(c.get("scale", 1.0), c.get("offset", 0.0), name=name)
        if cls == "Normalization":
            axis = c.get("axis", -1)
            if axis not in (-1, [-1], 3, [3]) or c.get("invert"):
                raise refuse("only per-channel normalisation (axis -1, invert False) is supported")
            if c.get("mean") is not None:
                mean, var = L._number_or_list(c["mean"]), L._number_or_list(c["variance"])
                return L.Normalization(mean, var, False, name=name)
            arrays = weights.get(name)
            if not arrays or len(arrays) < 2:
                raise refuse("its mean and variance are neither in its config nor in the weights "
                             "(was adapt() called?)")
            return L.Normalization(_flat_values(arrays, 0), _flat_values(arrays, 1), True, name=name)
        if cls == "Residual":
            main = tuple((n.name, lay) for n in c["main"] if (lay := _layer(source, n, weights)) is not None)
            short = tuple((n.name, lay) for n in c["shortcut"] if (lay := _layer(source, n, weights)) is not None)
            return L.Residual(main, short, name=name)
        if cls in AUGMENTATION or (cls in ("Sequential", "Functional") and _is_augmentation_model(
                {"class_name": cls, "config": c})):
            return None
        if cls in ("Sequential", "Functional", "Model"):
            raise refuse("a model nested inside the model is not supported (other than one of only "
                         "Random* augmentation layers)")
    except WeightsError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise refuse(f"its config cannot be used ({e})") from None
    raise refuse("cnnlab cannot build this layer type; it reads Conv2D, DepthwiseConv2D, "
                 "SeparableConv2D, pooling, BatchNormalization, Dropout, Flatten, Dense, "
                 "activations, ZeroPadding2D, Rescaling, Normalization and Add")


def spec_from_keras(kf: KerasFile):
    """(ModelSpec, [(name, Layer)] in order) from a Keras file's config."""
    from cnnlab.model.spec import ModelSpec

    cls, layers, inner = _layers_list(kf.path, kf.config)
    shape, nodes = _graph(kf.path, cls, layers, inner)
    out = []
    for node in nodes:
        layer = _layer(kf.path, node, kf.weights)
        if layer is not None:
            out.append((node.name, layer))
    if not out:
        raise _refuse(kf.path, "the model has no layers cnnlab can build")
    # The last Dense gives the classes: `units: classes`, so that training on other data
    # (`cnnlab train --model model.keras`) gets a head of the right size.
    dense = [i for i, (_, lay) in enumerate(out) if isinstance(lay, L.Dense)]
    classes = None
    if dense and isinstance(out[dense[-1]][1].units, int) and out[dense[-1]][1].units > 1:
        i = dense[-1]
        classes = out[i][1].units
        out[i] = (out[i][0], dataclasses.replace(out[i][1], units="classes"))
    name = str((inner.get("name") if isinstance(inner, dict) else None) or kf.path.stem)
    return ModelSpec(input=shape, layers=out, classes=classes, name=kf.path.stem,
                     description=f"read from {kf.path.name} (Keras {kf.keras_version or '?'} model {name!r})",
                     source=str(kf.path))


# ---------------------------------------------------------------------------------------
# Keras arrays <-> the torch modules' tensors.
# ---------------------------------------------------------------------------------------


def flatten_order(shape) -> np.ndarray:
    """perm with torch_flat[j] = keras_flat[perm[j]] for an (H, W, C) input to Flatten."""
    h, w, c = shape
    return np.arange(h * w * c).reshape(h, w, c).transpose(2, 0, 1).reshape(-1)


def _conv_kernel(k: np.ndarray) -> np.ndarray:
    return k.transpose(3, 2, 0, 1)  # (kh, kw, in, out) -> (out, in, kh, kw)


def _depthwise_kernel(k: np.ndarray) -> np.ndarray:
    kh, kw, cin, m = k.shape  # output channel c * m + j comes from input c (Keras and torch agree)
    return k.transpose(2, 3, 0, 1).reshape(cin * m, 1, kh, kw)


def keras_to_torch(layer: L.Layer, arrays: list[np.ndarray], perm: np.ndarray | None) -> dict[str, np.ndarray]:
    """The module tensors (state-dict suffix -> array) of one layer from its Keras variables."""
    a = [np.asarray(x, dtype=np.float32) for x in arrays]
    bias = lambda i, key: {key: a[i]} if len(a) > i else {}  # noqa: E731
    if isinstance(layer, L.Conv2D):
        return {"conv.weight": _conv_kernel(a[0]), **bias(1, "conv.bias")}
    if isinstance(layer, L.DepthwiseConv2D):
        return {"conv.weight": _depthwise_kernel(a[0]), **bias(1, "conv.bias")}
    if isinstance(layer, L.SeparableConv2D):
        return {"0.conv.weight": _depthwise_kernel(a[0]), "1.conv.weight": _conv_kernel(a[1]),
                **bias(2, "1.conv.bias")}
    if isinstance(layer, L.BatchNormalization):  # gamma (unless scale=False), beta, moving mean, variance
        keys = ("weight", "bias", "running_mean", "running_var") if layer.scale else (
            "bias", "running_mean", "running_var")
        return {k: v if perm is None else v[perm] for k, v in zip(keys, a)}
    if isinstance(layer, L.Dense):
        k = a[0] if perm is None else a[0][perm]
        return {"linear.weight": k.T, **bias(1, "linear.bias")}
    return {}


def torch_to_keras(layer: L.Layer, state: dict[str, torch.Tensor], perm: np.ndarray | None) -> list[np.ndarray]:
    """The inverse: Keras' variables, in Keras' order, from the module tensors."""
    s = {k: v.detach().cpu().float().numpy() for k, v in state.items()}

    def depthwise(w: np.ndarray, m: int) -> np.ndarray:
        out_c, _, kh, kw = w.shape
        return w.reshape(out_c // m, m, kh, kw).transpose(2, 3, 0, 1)

    def unflatten(v: np.ndarray) -> np.ndarray:
        if perm is None:
            return v
        out = np.empty_like(v)
        out[perm] = v
        return out

    if isinstance(layer, L.Conv2D):
        return [s["conv.weight"].transpose(2, 3, 1, 0)] + ([s["conv.bias"]] if "conv.bias" in s else [])
    if isinstance(layer, L.DepthwiseConv2D):
        return [depthwise(s["conv.weight"], layer.depth_multiplier)] + ([s["conv.bias"]] if "conv.bias" in s else [])
    if isinstance(layer, L.SeparableConv2D):
        return ([depthwise(s["0.conv.weight"], 1), s["1.conv.weight"].transpose(2, 3, 1, 0)]
                + ([s["1.conv.bias"]] if "1.conv.bias" in s else []))
    if isinstance(layer, L.BatchNormalization):
        return [unflatten(s[k]) for k in ("weight", "bias", "running_mean", "running_var") if k in s]
    if isinstance(layer, L.Dense):
        return [unflatten(s["linear.weight"].T)] + ([s["linear.bias"]] if "linear.bias" in s else [])
    if isinstance(layer, L.Normalization) and layer.stored:
        c = len(layer.mean) if isinstance(layer.mean, tuple) else 1
        return [np.asarray(layer.mean, np.float32).reshape(c), np.asarray(layer.variance, np.float32).reshape(c),
                np.asarray(0, np.int64)]
    return []


def _flat_perms(model) -> dict[str, np.ndarray]:
    """For layers after a Flatten of an (H, W, C) map up to the next Dense: the reordering."""
    perms: dict[str, np.ndarray] = {}
    perm = None
    for t in model.traced:
        if isinstance(t.layer, L.Flatten) and len(t.input_shape) == 3 and t.input_shape[:2] != (1, 1) \
                and t.input_shape[2] > 1:
            perm = flatten_order(t.input_shape)
        elif perm is not None and isinstance(t.layer, (L.BatchNormalization, L.Dense)):
            perms[t.name] = perm
            if isinstance(t.layer, L.Dense):
                perm = None
    return perms


def _module_layers(model):
    """(state-dict prefix, name, layer, input shape) of every layer that holds weights."""
    for t in model.traced:
        if t.children:
            for child in t.children:
                short = child.name.rsplit("/", 1)[-1]
                branch = "main" if any(n == short for n, _ in getattr(t.layer, "main", ())) else "shortcut"
                yield f"layers.{t.name}.{branch}.{short}.", short, child.layer, child.input_shape
        else:
            yield f"layers.{t.name}.", t.name, t.layer, t.input_shape


def load_keras_weights(model, kf: KerasFile) -> None:
    """Copy the file's weights into a CNN built from its spec; errors name the layer and shapes."""
    perms = _flat_perms(model)
    state = model.state_dict()
    for prefix, name, layer, _shape in _module_layers(model):
        arrays = kf.weights.get(name)
        wanted = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)
                  and not k.endswith("num_batches_tracked")}
        if not wanted:
            continue
        if arrays is None:
            raise _refuse(kf.path, f"layer {name!r} ({type(layer).__name__}) has no weights in the file")
        expect = len(torch_to_keras(layer, wanted, None))
        if len(arrays) != expect:
            raise _refuse(kf.path, f"layer {name!r} ({type(layer).__name__}) has {len(arrays)} weight arrays "
                                   f"in the file but its config needs {expect}")
        own_keras = torch_to_keras(layer, wanted, perms.get(name))
        for got, want in zip(arrays, own_keras):
            if tuple(np.shape(got)) != tuple(want.shape):
                raise _refuse(kf.path, f"layer {name!r} ({type(layer).__name__}): a weight of shape "
                                       f"{tuple(np.shape(got))} in the file does not fit its config, which "
                                       f"needs {tuple(want.shape)}")
        for key, value in keras_to_torch(layer, arrays, perms.get(name)).items():
            state[prefix + key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    model.load_state_dict(state)


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
    from cnnlab.model.build import CNN

    path = Path(path)
    kf = read_keras_file(path)
    spec = spec_from_keras(kf)
    from cnnlab.errors import SpecError

    try:
        model = CNN(spec)
    except SpecError as e:
        raise _refuse(path, f"its layers do not fit together in cnnlab ({e})") from None
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
