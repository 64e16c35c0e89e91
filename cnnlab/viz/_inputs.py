"""What the model-based figures take: a model and an image, in whichever form is at hand.

A model can be a run directory, a model file (``.safetensors``, Keras ``.keras``/``.h5``),
or a CNN already in memory; an
image can be a file (read exactly as in training, using the weights' metadata) or a
tensor that is already preprocessed (C, H, W).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cnnlab.data.normalize import Normalization
from cnnlab.data.preprocess import Preprocessor
from cnnlab.errors import CnnlabError
from cnnlab.run import open_any


@dataclass
class Loaded:
    """A model in eval mode with what is needed to feed it and to name its outputs."""

    model: Any  # cnnlab.model.build.CNN
    meta: dict[str, Any]
    name: str

    @property
    def classes(self) -> list[str]:
        classes = self.meta.get("classes")
        if classes:
            return list(classes)
        n = self.model.num_outputs
        if n == 1 and self.model.output_activation == "sigmoid":
            n = 2  # one sigmoid output: the probabilities of classes 0 and 1
        return [str(i) for i in range(n)]

    @property
    def normalization(self) -> Normalization:
        return Normalization.from_dict(self.meta.get("normalization"), self.model.input_shape[2])

    @property
    def device(self) -> torch.device:
        """Where the model's weights are (a model trained on a GPU stays there)."""
        return next(iter(self.model.parameters()), torch.empty(0)).device

    def image(self, image) -> tuple[torch.Tensor, str]:
        """(normalised (C, H, W) tensor on the model's device, a label for titles) from a path or a tensor."""
        x, label = self._image(image)
        return x.to(self.device), label

    def _image(self, image) -> tuple[torch.Tensor, str]:
        if isinstance(image, torch.Tensor):
            x = image.detach().float()
            if x.ndim == 4 and x.shape[0] == 1:
                x = x[0]
            h, w, c = self.model.input_shape
            if tuple(x.shape) != (c, h, w):
                raise CnnlabError(f"expected an image tensor of shape {(c, h, w)} (C, H, W), got {tuple(x.shape)}")
            return x, "image"
        if not Path(image).is_file():
            raise CnnlabError(f"{image}: no such image file")

        h, w, c = self.model.input_shape
        meta = {"input": [h, w, c], **{k: v for k, v in self.meta.items() if k in ("resize", "normalization")}}
        return Preprocessor.from_meta(meta).load(image), Path(image).name


def load(model, weights: str = "best") -> Loaded:
    """A run directory, a model file (.safetensors, .keras, .h5), or a CNN -> Loaded (eval mode)."""
    if isinstance(model, Loaded):
        return model
    if isinstance(model, torch.nn.Module):
        model.eval()
        meta = {"classes": None}
        return Loaded(model, meta, getattr(getattr(model, "spec", None), "name", "model"))
    opened = open_any(model, weights)
    return Loaded(opened.model.eval(), opened.meta, opened.name)
