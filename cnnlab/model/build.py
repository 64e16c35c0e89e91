"""Turn a ModelSpec into a torch.nn.Module.

The module returns *logits*: a final softmax (or sigmoid) written in the spec is kept
aside as ``model.output_activation`` and applied by ``model.predict_proba``, because the
loss computes it together with the log for numerical stability (exactly what Keras does
internally with ``from_logits``). Everything else runs as written.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

import torch
from torch import nn

from cnnlab.model.layers import Activation, Dense, Softmax
from cnnlab.model.spec import ModelSpec, TracedLayer, load_spec, trace


class CNN(nn.Module):
    """A sequential CNN built from a spec; layers keep their Keras names."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.traced: list[TracedLayer] = trace(spec)
        self.output_activation: str | None = None
        layers: "OrderedDict[str, nn.Module]" = OrderedDict()
        last = len(self.traced) - 1
        for i, t in enumerate(self.traced):
            layer = t.layer
            if i == last and isinstance(layer, Softmax):  # Keras' Softmax layer ends the model
                self.output_activation = "softmax"
                layer = Activation(None)
            elif i == last and getattr(layer, "activation", None) in ("softmax", "sigmoid"):
                self.output_activation = layer.activation
                if isinstance(layer, (Dense, Activation)):
                    layer = dataclasses.replace(layer, activation=None)
            layers[t.name] = layer.build(t.input_shape)
        self.layers = nn.ModuleDict(layers)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(height, width, channels), Keras order."""
        return self.spec.input

    @property
    def num_outputs(self) -> int:
        return self.traced[-1].output_shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers.values():
            x = layer(x)
        return x

    def features(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        """Every layer's output for input x (NCHW), in order, keyed by layer name."""
        out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
        for name, layer in self.layers.items():
            x = layer(x)
            out[name] = x
        return out

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities from logits; a single sigmoid output becomes [1-p, p]."""
        if self.output_activation == "sigmoid" and logits.shape[1] == 1:
            p = torch.sigmoid(logits)
            return torch.cat([1 - p, p], dim=1)
        if self.output_activation == "sigmoid":
            return torch.sigmoid(logits)
        return torch.softmax(logits, dim=1)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        was_training = self.training
        self.eval()
        try:
            return self.probabilities(self(x))
        finally:
            self.train(was_training)


def build_model(source, *, input=None, classes: int | None = None, seed: int | None = None) -> CNN:
    """Build a CNN from a preset name, YAML path, dict or ModelSpec.

    >>> model = build_model("seed")            # the lecture's example, 10 classes
    >>> model = build_model("tinyvgg", classes=3)
    """
    spec = load_spec(source, input=input, classes=classes)
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return CNN(spec)
    return CNN(spec)
