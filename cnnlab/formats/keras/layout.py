"""Keras arrays <-> the torch modules' tensors.

Keras keeps tensors channels-last; cnnlab computes channels-first. Kernels are transposed
((kh, kw, in, out) -> (out, in, kh, kw)) and a Dense after Flatten has its rows reordered
from Keras' (h, w, c) flatten order to torch's (c, h, w) (:func:`flat_perms`).
"""

from __future__ import annotations

import numpy as np
import torch

from cnnlab.formats.keras.read import KerasFile, refuse
from cnnlab.model import layers as L

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
    if isinstance(layer, L.BlurPool2D):  # a frozen DepthwiseConv2D in Keras
        return [depthwise(s["weight"], 1)]
    if isinstance(layer, L.BatchNormalization):
        return [unflatten(s[k]) for k in ("weight", "bias", "running_mean", "running_var") if k in s]
    if isinstance(layer, L.Dense):
        return [unflatten(s["linear.weight"].T)] + ([s["linear.bias"]] if "linear.bias" in s else [])
    if isinstance(layer, L.Normalization) and layer.stored:
        c = len(layer.mean) if isinstance(layer.mean, tuple) else 1
        return [np.asarray(layer.mean, np.float32).reshape(c), np.asarray(layer.variance, np.float32).reshape(c),
                np.asarray(0, np.int64)]
    return []


def flat_perms(model) -> dict[str, np.ndarray]:
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
    perms = flat_perms(model)
    state = model.state_dict()
    for prefix, name, layer, _shape in _module_layers(model):
        arrays = kf.weights.get(name)
        wanted = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)
                  and not k.endswith("num_batches_tracked")}
        if not wanted:
            continue
        if arrays is None:
            raise refuse(kf.path, f"layer {name!r} ({type(layer).__name__}) has no weights in the file")
        expect = len(torch_to_keras(layer, wanted, None))
        if len(arrays) != expect:
            raise refuse(kf.path, f"layer {name!r} ({type(layer).__name__}) has {len(arrays)} weight arrays "
                                   f"in the file but its config needs {expect}")
        own_keras = torch_to_keras(layer, wanted, perms.get(name))
        for got, want in zip(arrays, own_keras):
            if tuple(np.shape(got)) != tuple(want.shape):
                raise refuse(kf.path, f"layer {name!r} ({type(layer).__name__}): a weight of shape "
                                       f"{tuple(np.shape(got))} in the file does not fit its config, which "
                                       f"needs {tuple(want.shape)}")
        for key, value in keras_to_torch(layer, arrays, perms.get(name)).items():
            state[prefix + key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    model.load_state_dict(state)


