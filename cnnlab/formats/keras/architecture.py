"""A Keras file's config -> a cnnlab :class:`~cnnlab.model.spec.ModelSpec` (layer by layer).

A ``Lambda`` layer (Python code) or a custom class is refused with a sentence naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.errors import WeightsError
from cnnlab.formats.keras.read import (
    AUGMENTATION,
    CODE_LAYERS,
    KerasFile,
    class_name,
    refuse,
)
from cnnlab.model import layers as L
from cnnlab.model.spec import ModelSpec, head_as_classes

# ---------------------------------------------------------------------------------------
# Config -> cnnlab spec.
# ---------------------------------------------------------------------------------------


@dataclass
class _Node:
    name: str
    cls: str
    config: dict[str, Any]
    inputs: list[str] = field(default_factory=list)


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
        raise refuse(source, f"layer {entry.get('name')!r} is used {len(nodes)} times (a shared layer), "
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
        raise refuse(source, f"layer {name!r}: the model's input shape is not in its config "
                              "(build the model with keras.Input((H, W, C)) before saving)")
    dims = list(shape)[1:]
    if len(dims) != 3 or not all(isinstance(d, int) and d > 0 for d in dims):
        raise refuse(source, f"the model's input shape {tuple(shape)} is not a fixed (height, width, "
                              "channels) image size, which cnnlab needs")
    return (dims[0], dims[1], dims[2])


def _layers_list(source: Path, config: dict[str, Any]) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    cls = class_name(config)
    inner = config.get("config", {})
    if cls not in ("Sequential", "Functional", "Model"):
        if cls in CODE_LAYERS or config.get("registered_name") not in (None, cls):
            raise refuse(source, f"the model is a custom class {cls!r}, whose code cnnlab never runs")
        raise refuse(source, f"its top-level object is a {cls or 'something'!r}, not a Keras Sequential "
                              "or functional model")
    layers = inner if isinstance(inner, list) else inner.get("layers")
    if not isinstance(layers, list) or not layers:
        raise refuse(source, "its config lists no layers")
    return cls, layers, inner if isinstance(inner, dict) else {}


def _check_code(source: Path, entry: dict[str, Any]) -> None:
    cls = class_name(entry)
    name = (entry.get("config") or {}).get("name", entry.get("name", "?"))
    if cls in CODE_LAYERS:
        raise refuse(source, f"refused: layer {name!r} is a {cls} layer (Python code inside the file), "
                              "which cnnlab never runs; rebuild it from standard layers")
    registered = entry.get("registered_name")
    module = str(entry.get("module") or "keras")
    if (registered not in (None, cls) and not str(registered).startswith("keras")) or not module.startswith("keras"):
        raise refuse(source, f"refused: layer {name!r} is the custom object {registered or cls!r}, "
                              "whose code cnnlab does not have and never loads")


def _is_augmentation_model(entry: dict[str, Any]) -> bool:
    if class_name(entry) not in ("Sequential", "Functional"):
        return False
    inner = entry.get("config", {})
    layers = inner if isinstance(inner, list) else inner.get("layers", [])
    return all(class_name(e) in AUGMENTATION | {"InputLayer"} for e in layers)


def _graph(source: Path, cls: str, layers: list[dict[str, Any]], inner: dict[str, Any]):
    """(input shape, [_Node]) in order, a functional graph turned into a chain with Residuals."""
    for e in layers:
        _check_code(source, e)
    if cls == "Sequential":
        nodes, shape = [], None
        for e in layers:
            cfg = e.get("config", {})
            if class_name(e) == "InputLayer":
                shape = _input_shape(source, cfg, cfg.get("name", "input"))
                continue
            if shape is None and ("batch_input_shape" in cfg or "batch_shape" in cfg):
                shape = _input_shape(source, cfg, cfg.get("name", "?"))
            nodes.append(_Node(str(cfg.get("name", "")), class_name(e), cfg))
        if shape is None:
            build = (inner.get("build_input_shape") or {})
            if isinstance(build, list):
                shape = _input_shape(source, {"batch_shape": build}, "input")
            else:
                raise refuse(source, "the model's input shape is not in its config (build the model "
                                      "with keras.Input((H, W, C)) before saving)")
        return shape, nodes

    by_name: dict[str, _Node] = {}
    order: list[str] = []
    for e in layers:
        cfg = e.get("config", {})
        name = str(e.get("name") or cfg.get("name"))
        by_name[name] = _Node(name, class_name(e), cfg, _node_inputs(source, e))
        order.append(name)

    def endpoints(key: str) -> list[str]:
        v = inner.get(key) or []
        if v and isinstance(v[0], str):
            v = [v]  # Keras 3 writes a single input as ["name", 0, 0]
        return [str(t[0]) for t in v]

    ins, outs = endpoints("input_layers"), endpoints("output_layers")
    if len(ins) != 1 or len(outs) != 1:
        raise refuse(source, f"the model has {len(ins)} inputs and {len(outs)} outputs; cnnlab reads "
                              "models with one image input and one output")
    if by_name[ins[0]].cls != "InputLayer":
        raise refuse(source, f"its input {ins[0]!r} is not an InputLayer")
    shape = _input_shape(source, by_name[ins[0]].config, ins[0])
    users: dict[str, list[str]] = {n: [] for n in order}
    for n in order:
        for i in by_name[n].inputs:
            if i not in users:
                raise refuse(source, f"layer {n!r} takes the output of {i!r}, which the model does not have")
            users[i].append(n)

    def follow(t: str, chain: list[_Node], in_branch: bool) -> tuple[list[_Node], str, str | None]:
        """Walk forward from tensor t: (nodes, last tensor, the Add it reached or None)."""
        while True:
            us = users[t]
            if not us or t == outs[0] and not in_branch:
                if us:
                    raise refuse(source, f"the output of {t!r} is used after the model's output")
                return chain, t, None
            if len(us) == 1:
                u = by_name[us[0]]
                if len(u.inputs) > 1:
                    return chain, t, u.name
                chain.append(u)
                t = u.name
                continue
            if len(us) != 2:
                raise refuse(source, f"the output of {t!r} feeds {len(us)} layers ({', '.join(us)}); "
                                      "cnnlab reads chains and two-branch residual blocks (Add)")
            if in_branch:
                raise refuse(source, f"a branch inside the residual block after {t!r} branches again, "
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
                raise refuse(source, f"the two branches from {t!r} meet in {what!r}; cnnlab reads "
                                      "residual blocks that join with Add")
            main, short = sorted(branches, key=lambda b: -len(b[0]))
            add = by_name[merge]
            chain.append(_Node(add.name, "Residual", {"main": main[0], "shortcut": short[0]}))
            t = add.name

    chain, end, merge = follow(ins[0], [], False)
    if merge is not None:
        raise refuse(source, f"layer {merge!r} ({by_name[merge].cls}) joins tensors cnnlab cannot "
                              "trace back to one branch point")
    if end != outs[0]:
        raise refuse(source, f"the walk from the input ends at {end!r}, not at the output {outs[0]!r}")
    return shape, chain


def _activation(source: Path, name: str, v: Any) -> str | None:
    if isinstance(v, dict):  # Keras 3 may serialise an activation as an object
        v = v.get("config", {}).get("name") if v.get("class_name") == "function" else v.get("class_name")
    if v in (None, "linear"):
        return None
    if v not in L.ACTIVATIONS:
        raise refuse(source, f"layer {name!r}: activation {v!r} is not one cnnlab has "
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
        return refuse(source, f"{where}: {why}")

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
    cls, layers, inner = _layers_list(kf.path, kf.config)
    shape, nodes = _graph(kf.path, cls, layers, inner)
    out = []
    for node in nodes:
        layer = _layer(kf.path, node, kf.weights)
        if layer is not None:
            out.append((node.name, layer))
    if not out:
        raise refuse(kf.path, "the model has no layers cnnlab can build")
    name = str((inner.get("name") if isinstance(inner, dict) else None) or kf.path.stem)
    # The last Dense gives the classes: `units: classes`, so that training on other data
    # (`cnnlab train --model model.keras`) gets a head of the right size.
    return head_as_classes(ModelSpec(
        input=shape, layers=out, name=kf.path.stem, source=str(kf.path),
        description=f"read from {kf.path.name} (Keras {kf.keras_version or '?'} model {name!r})"))


