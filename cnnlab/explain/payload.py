"""Model + image -> everything the explainer page shows, as one JSON-able dict.

The page never runs the network itself: Python runs it once, with torch, and hands over
every number the page needs to *show the arithmetic* of any neuron:

* every layer's output, channel by channel (the heat maps, and the inputs of the next
  layer, so the page can redo a convolution or a max-pool by hand);
* the pre-activation of each Conv2D / Dense that has an activation (read with forward
  hooks on the layer's ``.conv`` / ``.linear``, i.e. the model's own computation);
* the weights the page needs for that arithmetic: conv kernels and biases, batch-norm
  statistics, and for Dense layers the top contributions ``w_i * x_i`` of every unit
  (a Dense can hold millions of weights; the top terms plus "the rest" are what a learner
  can check by hand);
* logits and class probabilities.

Arrays are float32, exactly as torch computed them, packed into one little-endian buffer
that is gzip-compressed and base64-encoded (ReLU outputs are mostly zeros, so this halves
the size). A tensor in the JSON is a reference ``{"o": offset, "n": count, "shape": [...]}``
into that buffer, in floats; image-shaped tensors are (channels, height, width).
"""

from __future__ import annotations

import base64
import gzip
import io
import json
from typing import Any

import numpy as np
import torch
from PIL import Image

from cnnlab.model import layers as L
from cnnlab.model.summary import summary
from cnnlab.run import Preprocessor

FORMAT = "cnnlab-explain/1"
TOP_CONTRIBUTIONS = 10  # Dense: how many w_i * x_i terms to list per unit


class Blob:
    """Collects float32 arrays into one buffer and hands out references into it."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.count = 0  # floats so far

    def add(self, values: torch.Tensor | np.ndarray) -> dict[str, Any]:
        arr = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
        arr = np.ascontiguousarray(arr, dtype="<f4")
        ref = {"o": self.count, "n": int(arr.size), "shape": list(arr.shape)}
        self.parts.append(arr.tobytes())
        self.count += int(arr.size)
        return ref

    def encode(self, compress: bool = True) -> dict[str, Any]:
        raw = b"".join(self.parts)
        data = gzip.compress(raw, compresslevel=6, mtime=0) if compress else raw
        return {"encoding": "gzip+base64" if compress else "base64", "floats": self.count,
                "bytes": len(raw), "data": base64.b64encode(data).decode("ascii")}


def png_data_url(image: np.ndarray) -> str:
    """(H, W, C) uint8 -> a data: URL of a PNG, for <img> without any network."""
    arr = image[:, :, 0] if image.shape[2] == 1 else image
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _conv_info(conv: torch.nn.Conv2d, pad: tuple | None, blob: Blob) -> dict[str, Any]:
    """Kernel, bias and the exact padding (top, bottom, left, right) of one convolution."""
    if pad is not None:  # KerasConv's asymmetric 'same': F.pad order is (left, right, top, bottom)
        left, right, top, bottom = pad
    else:
        top = bottom = int(conv.padding[0])
        left = right = int(conv.padding[1])
    return {
        "kernel": blob.add(conv.weight),  # (out, in / groups, kh, kw)
        "bias": blob.add(conv.bias) if conv.bias is not None else None,
        "stride": list(conv.stride),
        "dilation": list(conv.dilation),
        "pad": [top, bottom, left, right],
        "groups": conv.groups,
    }


def _pool_info(module, blob: Blob) -> dict[str, Any]:
    if module.pad is not None:
        left, right, top, bottom = module.pad
    else:
        top = bottom = int(module.sym[0])
        left = right = int(module.sym[1])
    return {"kind": module.kind, "size": list(module.k), "stride": list(module.s),
            "pad": [top, bottom, left, right]}


def _bn_info(bn: torch.nn.modules.batchnorm._BatchNorm, blob: Blob) -> dict[str, Any]:
    return {"mean": blob.add(bn.running_mean), "var": blob.add(bn.running_var),
            "gamma": blob.add(bn.weight), "beta": blob.add(bn.bias), "eps": float(bn.eps)}


def _dense_info(linear: torch.nn.Linear, x: torch.Tensor, blob: Blob) -> dict[str, Any]:
    """Per unit: the largest |w_i * x_i| terms, the sum of the others, and the bias.

    ``x`` is the layer's input (features,). Sums are in float64 so that the page's
    arithmetic (JavaScript numbers are float64) adds up to the same digits.
    """
    w = linear.weight.detach().double()  # (units, inputs)
    products = w * x.double()[None, :]
    k = min(TOP_CONTRIBUTIONS, products.shape[1])
    top = products.abs().topk(k, dim=1).indices  # (units, k)
    rows = torch.arange(products.shape[0])[:, None]
    table = torch.stack([top.double(), x.double()[top], w[rows, top], products[rows, top]], dim=2)
    rest = products.sum(1) - products[rows, top].sum(1)
    bias = linear.bias.detach() if linear.bias is not None else torch.zeros(products.shape[0])
    return {
        "inputs": int(products.shape[1]),
        "top": blob.add(table),  # (units, k, 4): input index, x_i, w_i, w_i * x_i
        "rest": blob.add(rest),  # sum of the other inputs' products
        "bias": blob.add(bias),
        "has_bias": linear.bias is not None,
    }


def _kind(module: torch.nn.Module) -> str:
    if isinstance(module, L.KerasConv):
        return "conv"
    if isinstance(module, L.KerasPool):
        return "pool"
    if isinstance(module, L.Dense2d):
        return "dense"
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
        return "bn"
    if isinstance(module, L.ActivationModule):
        return "act"
    if isinstance(module, L.GlobalPool):
        return "gap"
    if isinstance(module, L.FlattenModule):
        return "flatten"
    if isinstance(module, (torch.nn.Dropout, torch.nn.Dropout2d)):
        return "dropout"
    if isinstance(module, L.ZeroPad):
        return "pad"
    return "other"  # composite layers (ResidualBlock, SeparableConv2D): output only


def _activation_name(layer_spec: Any, last: bool, model) -> str | None:
    """The activation the page applies after this layer (None: linear)."""
    act = getattr(layer_spec, "activation", None)
    if last and act == model.output_activation:
        return None  # kept aside by the model and shown as the output step
    return act


def _channels_first(t: torch.Tensor) -> torch.Tensor:
    """Drop the batch axis: (1, C, H, W) -> (C, H, W), (1, N) -> (N,)."""
    return t[0]


@torch.no_grad()
def explain(model, meta: dict[str, Any], image: np.ndarray, *, name: str = "image",
            compress: bool = True) -> dict[str, Any]:
    """Run ``model`` on ``image`` ((H, W, C) uint8 at the model's size) and collect the page's data.

    ``meta`` is the weights file's metadata (classes, normalisation). The model is not
    changed; forward hooks are removed before returning. Not thread-safe for one model:
    callers serving requests in parallel hold a lock around it (see server.py).
    """
    pre = Preprocessor.from_meta(meta)
    h, w, c = model.input_shape
    if image.shape != (h, w, c):
        raise ValueError(f"image must be {h}x{w}x{c} uint8, got {image.shape}")
    model.eval()
    x = pre.to_tensor(image).unsqueeze(0)

    # The pre-activations, from the model's own forward pass.
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for lname, module in model.layers.items():
        inner = getattr(module, "conv", None) if _kind(module) == "conv" else getattr(module, "linear", None)
        if inner is not None:
            handles.append(inner.register_forward_hook(
                lambda _m, _i, out, lname=lname: captured.__setitem__(lname, out.detach().clone())))
    try:
        features = model.features(x)
    finally:
        for hd in handles:
            hd.remove()
    logits = next(reversed(features.values()))
    probs = model.probabilities(logits)[0]

    blob = Blob()
    rows = {r.name: r for r in summary(model).layers}
    classes = list(meta.get("classes") or [str(i) for i in range(probs.numel())])
    layers: list[dict[str, Any]] = [{
        "name": "input", "type": "Input", "kind": "input", "index": 0,
        "output_shape": [h, w, c], "params": 0, "formula": "", "receptive_field": 1,
        "out": blob.add(x[0]), "channel_names": ["R", "G", "B"] if c == 3 else ["gray"],
    }]
    prev = x
    last = len(model.traced) - 1
    for i, (t, (lname, module)) in enumerate(zip(model.traced, model.layers.items())):
        out = features[lname]
        kind = _kind(module)
        row = rows.get(lname)
        entry: dict[str, Any] = {
            "name": lname, "type": t.type, "kind": kind, "index": t.index,
            "input_shape": list(t.input_shape), "output_shape": list(t.output_shape),
            "params": row.params if row else 0, "formula": row.formula if row else "",
            "receptive_field": row.receptive_field if row else None,
            "args": t.layer.to_args(),  # as the spec writes them: kernel_size, strides, ...
            "activation": _activation_name(t.layer, i == last, model),
            "out": blob.add(_channels_first(out)),
        }
        if kind == "conv":
            entry["conv"] = _conv_info(module.conv, module.pad, blob)
            entry["kernel_size"] = list(module.conv.kernel_size)
            if entry["activation"]:
                entry["pre"] = blob.add(_channels_first(captured[lname]))
        elif kind == "dense":
            entry["dense"] = _dense_info(module.linear, prev[0], blob)
            if entry["activation"]:
                entry["pre"] = blob.add(_channels_first(captured[lname]))
        elif kind == "pool":
            entry["pool"] = _pool_info(module, blob)
        elif kind == "bn":
            entry["bn"] = _bn_info(module, blob)
        elif kind == "gap":
            entry["gap"] = {"kind": module.kind}
        layers.append(entry)
        prev = out

    top = int(probs.argmax())
    return {
        "format": FORMAT,
        "model": {
            "name": model.spec.name,
            "input": [h, w, c],
            "classes": classes,
            "output_activation": model.output_activation,
            "normalization": pre.normalization.to_dict(),
            "total_params": sum(int(p.numel()) for p in model.parameters()),
            "epoch": meta.get("epoch"),
            "metric": meta.get("metric"),
        },
        "image": {"name": name, "png": png_data_url(image)},
        "layers": layers,
        "logits": [float(v) for v in logits[0]],
        "probabilities": [float(v) for v in probs],
        "prediction": {"index": top, "class": classes[top] if top < len(classes) else str(top),
                       "probability": float(probs[top])},
        "blob": blob.encode(compress),
    }


def decode_blob(payload: dict[str, Any]) -> np.ndarray:
    """The payload's float buffer as a numpy array (for tests and tools)."""
    b = payload["blob"]
    raw = base64.b64decode(b["data"])
    if b["encoding"].startswith("gzip"):
        raw = gzip.decompress(raw)
    return np.frombuffer(raw, dtype="<f4")


def tensor(payload: dict[str, Any], ref: dict[str, Any]) -> np.ndarray:
    """One referenced array of the payload, with its shape."""
    flat = decode_blob(payload)
    return flat[ref["o"]: ref["o"] + ref["n"]].reshape(ref["shape"] or [ref["n"]])


def payload_bytes(payload: dict[str, Any]) -> int:
    """Size of the payload as JSON text, in bytes (what the page embeds)."""
    return len(json.dumps(payload, separators=(",", ":")))


__all__ = ["explain", "decode_blob", "tensor", "payload_bytes", "png_data_url", "FORMAT"]
