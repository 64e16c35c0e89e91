"""cnnlab's own model files: a ``.safetensors`` file whose JSON header holds the model spec,
the class names and the preprocessing (written by :func:`cnnlab.io.weights.save_weights`),
rebuilt into a model here, where the model layer is known.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cnnlab.errors import WeightsError
from cnnlab.io.weights import load_state, read_metadata
from cnnlab.model.build import CNN
from cnnlab.model.spec import spec_from_dict


def load_weights(path: str | Path, device: str | torch.device = "cpu"):
    """Rebuild the model from a cnnlab weights file: returns (model, metadata)."""
    path = Path(path)
    meta = read_metadata(path)
    if "spec" not in meta:
        raise WeightsError(f"{path}: its metadata has no model spec")
    model = CNN(spec_from_dict(meta["spec"], source=f"{path} (spec)"))
    state = load_state(path)
    own = model.state_dict()
    for name, tensor in state.items():
        if name in own and own[name].shape != tensor.shape:
            raise WeightsError(
                f"{path}: tensor {name} has shape {tuple(tensor.shape)} but its model spec "
                f"needs {tuple(own[name].shape)}"
            )
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        which = missing[0] if missing else unexpected[0]
        raise WeightsError(f"{path}: its tensors do not match its model spec (first mismatch: {which})")
    return model.to(device).eval(), meta
