"""Reading the two Keras file layouts (``.keras`` zip, legacy ``.h5``) into a :class:`KerasFile`.

JSON and h5py only: nothing in the file is ever executed. See :mod:`cnnlab.formats.keras`.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.errors import CnnlabError, WeightsError
from cnnlab.formats import KERAS_SUFFIXES as SUFFIXES

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


def refuse(path: Path, why: str) -> WeightsError:
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
        raise refuse(path, f"its {what} is not valid JSON (truncated or corrupt?)") from None
    if not isinstance(data, dict):
        raise refuse(path, f"its {what} is not a Keras model config")
    return data


def class_name(entry: dict[str, Any]) -> str:
    """The ``class_name`` of a Keras config entry ("" when it has none)."""
    return str(entry.get("class_name", ""))


def keras_snake(name: str) -> str:
    """Keras' object paths: Conv2D -> conv2d, BatchNormalization -> batch_normalization, ReLU -> re_lu."""
    s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", s).lower()


def _object_paths(config: dict[str, Any]) -> dict[str, str]:
    """{path in model.weights.h5: layer name}, as Keras numbers them: the snake_case class name
    plus a counter, over the model's layers (a Sequential's InputLayer is not one of them).
    Used when a file's groups do not carry the layer's name as an attribute."""
    inner = config.get("config", {})
    layers = inner if isinstance(inner, list) else inner.get("layers", [])
    sequential = class_name(config) == "Sequential"
    counts: dict[str, int] = {}
    out = {}
    for e in layers:
        if sequential and class_name(e) == "InputLayer":
            continue
        base = keras_snake(class_name(e))
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
        raise refuse(path, f"not a readable .keras zip ({e})") from None
    with zf:
        infos = {i.filename: i for i in zf.infolist()}
        if "config.json" not in infos:
            raise refuse(path, "a zip without config.json, so not a Keras 3 .keras model")
        total = sum(i.file_size for i in infos.values())
        cfg_info = infos["config.json"]
        if cfg_info.file_size > MAX_CONFIG_BYTES or total > MAX_WEIGHTS_BYTES + MAX_CONFIG_BYTES:
            raise refuse(path, f"refused: it unpacks to {total / 2**20:,.0f} MiB, far more than a model "
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
                raise refuse(path, f"its model.weights.h5 cannot be read ({e})") from None
        elif any(n.endswith(".npz") or n == "model.weights.npz" for n in infos):
            raise refuse(path, "its weights are not in model.weights.h5 (an unsupported .keras variant)")
    return KerasFile(path, config, weights, version, own_classes)


def _read_capped(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, path: Path) -> bytes:
    """The entry's bytes, stopping at ``limit`` whatever its header claims (zip bombs lie)."""
    try:
        with zf.open(info) as f:
            data = f.read(limit + 1)
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as e:
        raise refuse(path, f"its {info.filename} cannot be unpacked ({e})") from None
    if len(data) > limit:
        raise refuse(path, f"refused: its {info.filename} unpacks to more than {limit / 2**20:,.0f} MiB "
                            "(a zip bomb?)")
    return data


def _read_legacy_h5(path: Path) -> KerasFile:
    h5py = _h5py()
    try:
        h5 = h5py.File(path, "r")
    except OSError as e:
        raise refuse(path, f"cannot be read as HDF5 (truncated or corrupt? {e})") from None
    with h5:
        if "model_config" not in h5.attrs:  # save_weights() files (Keras 2 or 3) have no architecture
            raise refuse(path, "an HDF5 file without a model config (weights only, from save_weights?); "
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
            raise refuse(path, f"its weights cannot be read (truncated or corrupt? {e})") from None
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


