"""The losses ``--loss`` can name: one registry entry each.

A builder takes the model (its output layer decides binary or multi-class), the label
smoothing and the per-class weights (or None), and returns ``loss_fn(logits, labels)``,
a module. To add one::

    @LOSSES.register("focal", "focal loss (Lin et al. 2017): hard examples weigh more")
    def _focal(model, label_smoothing, class_weights):
        return FocalLoss(gamma=2.0, weight=class_weights)
"""

from __future__ import annotations

import functools

from cnnlab.registry import Registry

LOSSES: Registry = Registry("loss")


def is_binary(model) -> bool:
    """One sigmoid output: the Keras way of writing a two-class model."""
    return getattr(model, "output_activation", None) == "sigmoid" and getattr(model, "num_outputs", 0) == 1


@functools.cache  # defined on first use: this module is read by `cnnlab --help`, without torch
def _binary_loss_class():
    import torch.nn.functional as F  # torch: `cnnlab --help` reads this registry
    from torch import nn  # torch: `cnnlab --help` reads this registry

    class BinaryLoss(nn.Module):
        """Binary cross-entropy for a model with one sigmoid output, with label smoothing."""

        def __init__(self, label_smoothing: float = 0.0, weight=None):
            super().__init__()
            self.label_smoothing = label_smoothing
            self.register_buffer("weight", weight, persistent=False)

        def forward(self, logits, labels):
            target = labels.to(logits.dtype) * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
            per_sample = F.binary_cross_entropy_with_logits(logits[:, 0], target, reduction="none")
            if self.weight is not None:
                return (per_sample * self.weight[labels]).sum() / self.weight[labels].sum()
            return per_sample.mean()

    return BinaryLoss


@LOSSES.register("cross_entropy", "cross-entropy on the logits (binary for one sigmoid output)")
def default_loss(model, label_smoothing: float = 0.0, class_weights=None):
    """Cross-entropy on the logits; binary cross-entropy for a single sigmoid output."""
    from torch import nn  # torch: `cnnlab --help` reads this registry

    if is_binary(model):
        return _binary_loss_class()(label_smoothing, class_weights)
    return nn.CrossEntropyLoss(weight=class_weights, label_smoothing=label_smoothing)
