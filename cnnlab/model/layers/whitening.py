"""Layers of the fast CIFAR recipe (see cnnlab/train/recipes.py): PatchWhitening, a frozen stem
whose kernels whiten the image patches, fitted to the training images by :func:`data_init`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.model.layers.base import (Layer, ParamGroup, Shape, _activation, _bool, _pair, _positive_float, arg,
                                      make_activation, register)
from cnnlab.model.layers.conv import Conv2D


class WhiteningConv(nn.Module):
    """A frozen k x k convolution whose kernels whiten the image patches it sees.

    ``fit(x)`` sets the kernels from a batch of (normalised) training images: with Σ the
    covariance of all k x k x C patches (D = k*k*C values each), Σ = V diag(λ) Vᵀ, the
    filters are the rows of diag(1/sqrt(λ + ε)) Vᵀ -- PCA whitening -- so the D output
    channels are uncorrelated with unit variance (ε keeps the noisiest directions from
    being blown up). The bias starts at -W·mean, so the outputs start centred; it trains,
    the kernels never do. With ``negate`` the D negated filters follow (2*D channels), so
    an activation after the stem keeps both signs of each component.
    """

    def __init__(self, conv: nn.Conv2d, epsilon: float, negate: bool, activation: str | None):
        super().__init__()
        self.conv = conv
        self.conv.weight.requires_grad_(False)
        self.epsilon, self.negate = epsilon, negate
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> torch.Tensor:
        """Set the kernels (and bias) from images x (N, C, H, W); returns the eigenvalues."""
        k = self.conv.kernel_size
        patches = F.unfold(x.double(), k).transpose(1, 2).reshape(-1, x.shape[1] * k[0] * k[1])
        mean = patches.mean(0)
        centred = patches - mean
        cov = centred.T @ centred / (len(patches) - 1)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)  # ascending
        eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)  # strongest first
        w = eigenvectors.T / torch.sqrt(eigenvalues.clamp(min=0) + self.epsilon)[:, None]
        if self.negate:
            w = torch.cat([w, -w])
        weight = self.conv.weight
        weight.copy_(w.reshape(weight.shape).to(weight.dtype))  # unfold's order is (C, kh, kw)
        if self.conv.bias is not None:
            self.conv.bias.copy_((-w @ mean).to(self.conv.bias.dtype))
        return eigenvalues


@register
@dataclass
class PatchWhitening(Layer):
    doc: ClassVar[str] = (
        "Frozen k x k convolution whose kernels whiten the image patches, computed from the "
        "training images when training starts (stem of airbench, Jordan 2024; after tysam-code's "
        "hlb-CIFAR10 and Page's ResNet speed runs)."
    )
    patch_size: tuple[int, int] = arg(_pair, "patch (kernel) height and width", (2, 2))
    epsilon: float = arg(_positive_float, "added to each eigenvalue before 1/sqrt (limits the gain)", 5e-4)
    negate: bool = arg(_bool, "also output the negated filters (doubles the channels)", True)
    activation: str | None = arg(_activation, "activation applied to the output", None)
    use_bias: bool = arg(_bool, "a bias per output channel (trained; the kernels are frozen)", True)
    name: str | None = None

    def _filters(self, shape: Shape) -> int:
        d = self.patch_size[0] * self.patch_size[1] * shape[2]
        return 2 * d if self.negate else d

    def output_shape(self, shape: Shape) -> Shape:
        return Conv2D(self._filters(shape), self.patch_size).output_shape(shape)

    def params(self, shape: Shape) -> list[ParamGroup]:
        (kh, kw), cin, n = self.patch_size, shape[2], self._filters(shape)
        groups = [ParamGroup("kernel (frozen)", f"{kh}*{kw}*{cin}*{n}", kh * kw * cin * n, False)]
        if self.use_bias:
            groups.append(ParamGroup("bias", f"{n}", n, True))
        return groups

    def macs(self, shape: Shape, out: Shape) -> int:
        return out[0] * out[1] * out[2] * self.patch_size[0] * self.patch_size[1] * shape[2]

    def rf(self) -> tuple[int, int]:
        return self.patch_size[0], 1

    def build(self, shape: Shape) -> nn.Module:
        conv = nn.Conv2d(shape[2], self._filters(shape), self.patch_size, bias=self.use_bias)
        with torch.no_grad():  # until fit(): an unwhitened but harmless start
            if conv.bias is not None:
                conv.bias.zero_()
        return WhiteningConv(conv, self.epsilon, self.negate, self.activation)


def data_init(model: nn.Module, images: torch.Tensor) -> list[str]:
    """Fit every data-initialised layer (PatchWhitening) of a CNN to a batch of its inputs.

    ``images``: normalised float (N, C, H, W), the model's own input. The batch runs through
    the layers in order, so a whitening layer deeper in the model sees its real input.
    Returns the names of the layers that were fitted.
    """
    layers = getattr(model, "layers", None)
    if layers is None:
        return []
    fitted: list[str] = []
    names = [n for n, m in layers.items() if hasattr(m, "fit")]
    if not names:
        return fitted
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x = images.float()
            for name, layer in layers.items():
                if hasattr(layer, "fit"):
                    layer.fit(x)
                    fitted.append(name)
                if len(fitted) == len(names):
                    break
                x = layer(x)
    finally:
        model.train(was_training)
    return fitted
