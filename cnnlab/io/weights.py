"""Model files: safetensors tensors + JSON metadata in the same file's header.

A ``.safetensors`` file holds raw tensors and a small JSON header, so loading one never
runs code (unlike pickle, which ``torch.save`` uses). cnnlab puts everything needed to
rebuild the model -- the spec, the class names, the input size, the normalisation -- in
the header under the key ``cnnlab``, so a model is rebuilt from this one file alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from cnnlab.errors import WeightsError
from cnnlab.io.fs import atomic_path

FORMAT = "cnnlab-weights/1"


def _sniff(path: Path) -> str | None:
    """Name what a non-safetensors file looks like, for the error message."""
    try:
        head = path.open("rb").read(8)
    except OSError:
        return None
    if head[:2] == b"PK":
        return "a zip archive (torch.save/pickle format)"
    if head[:1] == b"\x80":
        return "a Python pickle"
    if head[:4] == b"\x89HDF":
        return "an HDF5/Keras .h5 file"
    return None


def save_weights(path: str | Path, model: torch.nn.Module, meta: dict[str, Any] | None = None) -> None:
    """Write the model's state and metadata atomically. ``meta`` must be JSON-serialisable."""
    write_safetensors(path, *weights_file(model, meta))


def weights_file(model: torch.nn.Module, meta: dict[str, Any] | None = None
                 ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, header) of a weights file for ``model``: copies, so training may go on."""
    meta = dict(meta or {})
    spec = getattr(model, "spec", None)
    if spec is not None and "spec" not in meta:
        meta["spec"] = spec.to_dict()
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    return state, {"format": FORMAT, "cnnlab": json.dumps(meta)}


def write_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], header: dict[str, str]) -> None:
    """``tensors`` with the string ``header`` as metadata, written to ``path`` atomically."""
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)


def read_header(path: str | Path) -> dict[str, str]:
    """A safetensors file's string metadata, without reading its tensors (raises what
    safetensors raises on a file that is not one: callers say why in their own words)."""
    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a cnnlab weights file, without loading the tensors."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    try:
        header = read_header(path)
    except Exception:
        kind = _sniff(path)
        why = f"it is {kind}, which cnnlab never loads because it can run code" if kind else (
            "it is not a valid safetensors file (truncated or corrupt?)")
        raise WeightsError(f"{path}: refused: {why}") from None
    if header.get("format") != FORMAT or "cnnlab" not in header:
        raise WeightsError(f"{path}: a safetensors file, but not one written by cnnlab (no cnnlab metadata)")
    try:
        return json.loads(header["cnnlab"])
    except json.JSONDecodeError:
        raise WeightsError(f"{path}: its cnnlab metadata is not valid JSON") from None


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    read_metadata(path)  # checks the format first, with a clear message
    return load_file(str(path), device="cpu")
