"""Grad-CAM: where in the image the network found the evidence for a class.

Grad-CAM (Selvaraju et al., 2017) looks at the feature maps A_k of a late convolutional
layer -- still a spatial map, but already about "parts of objects" -- and asks how much
the class score y_c (the logit, before softmax) would grow if each map grew:

    alpha_k = mean over positions of  d y_c / d A_k        (one weight per channel)
    cam     = ReLU( sum_k alpha_k * A_k )                   (one value per position)

Channels that vote for the class are added, those that vote against are subtracted, and
ReLU keeps only positive evidence. The coarse map (e.g. 7x7) is upsampled to the image
and overlaid on it.

    >>> from cnnlab.viz import gradcam, plot_gradcam
    >>> result = gradcam("runs/cats", "cat.jpg")        # result.cam: (H, W) in [0, 1]
    >>> fig = plot_gradcam("runs/cats", ["cat.jpg", "dog.jpg"], path="cam.png")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.errors import CnnlabError
from cnnlab.io.figures import save_figure
from cnnlab.viz._figure import (
    TITLE_SIZE,
    colorbar,
    hide_ticks,
    image_to_display,
    new_figure,
    show_image,
)
from cnnlab.viz._inputs import load
from cnnlab.viz._model import gradcam_layer


@dataclass
class GradCAM:
    """The result for one image and one class."""

    cam: np.ndarray  # (H, W) at the input's size, scaled to [0, 1]
    coarse: np.ndarray  # (h, w) at the layer's size, before scaling and upsampling
    layer: str
    layer_shape: tuple[int, int, int]  # Keras order (h, w, channels)
    class_index: int
    class_name: str
    probabilities: np.ndarray  # every class's probability for this image
    image: np.ndarray  # the input as displayed, (H, W, 3) or (H, W) in [0, 1]
    label: str  # the image's name, for titles

    @property
    def probability(self) -> float:
        return float(self.probabilities[self.class_index])

    @property
    def predicted(self) -> int:
        return int(self.probabilities.argmax())


def class_score(logits: torch.Tensor, index: int) -> torch.Tensor:
    """The score Grad-CAM differentiates: the class's logit.

    A binary model with one sigmoid output has a single logit z for class 1; class 0's
    score is then -z (its probability is sigmoid(-z)).
    """
    if logits.shape[1] == 1:
        return logits[0, 0] if index == 1 else -logits[0, 0]
    return logits[0, index]


def _class_index(cls, classes: list[str]) -> int | None:
    if cls is None:
        return None
    if isinstance(cls, int) and not isinstance(cls, bool):
        if not 0 <= cls < len(classes):
            raise CnnlabError(f"class index {cls} is out of range; the model has classes 0..{len(classes) - 1}")
        return cls
    if str(cls) in classes:
        return classes.index(str(cls))
    if str(cls).isdigit():  # an index given as text, e.g. --class 1
        return _class_index(int(cls), classes)
    raise CnnlabError(f"unknown class {cls!r}; the model's classes are {', '.join(classes)}")


def gradcam(model, image, cls: str | int | None = None, layer: str | None = None,
            weights: str = "best") -> GradCAM:
    """Grad-CAM of one image for class `cls` (a name or index; default: the predicted one).

    layer: a layer with a spatial output (default: the end of the last conv block).
    model: a run directory, a .safetensors file or a CNN; image: a file or a
    preprocessed (C, H, W) tensor.
    """
    loaded = load(model, weights)
    net = loaded.model
    x, label = loaded.image(image)
    target = gradcam_layer(net, layer)
    index = _class_index(cls, loaded.classes)

    net.eval()
    with torch.enable_grad():
        inp = x[None].clone().requires_grad_(True)  # a graph exists even if the weights are frozen
        outputs = net.features(inp)
        maps = outputs[target.name]  # A: (1, C, h, w)
        logits = next(reversed(outputs.values()))
        probs = net.probabilities(logits)[0].detach()
        if index is None:
            index = int(probs.argmax())
        (grads,) = torch.autograd.grad(class_score(logits, index), maps)

    alpha = grads.mean(dim=(2, 3), keepdim=True)  # (1, C, 1, 1): how much each channel matters
    coarse = F.relu((alpha * maps.detach()).sum(dim=1))  # (1, h, w)
    up = F.interpolate(coarse[None], size=tuple(x.shape[1:]), mode="bilinear", align_corners=False)[0, 0]
    peak = float(up.max())
    cam = (up / peak if peak > 0 else up).cpu().numpy()
    return GradCAM(cam, coarse[0].cpu().numpy(), target.name, tuple(target.output_shape), index,
                   loaded.classes[index], probs.cpu().numpy(), image_to_display(x, loaded.normalization), label)


def _draw_probabilities(ax, result: GradCAM, classes: list[str], top: int = 5) -> None:
    order = np.argsort(result.probabilities)[::-1][:top]
    names = [classes[i] for i in order][::-1]
    values = result.probabilities[order][::-1]
    colours = ["tab:orange" if i == result.class_index else "tab:blue" for i in order][::-1]
    ax.barh(names, values, color=colours)
    ax.set_xlim(0, 1)
    for y, v in enumerate(values):
        ax.text(min(v + 0.02, 0.8), y, f"{v:.2f}", va="center", fontsize=9)
    ax.set_title(f"top {len(order)} probabilities", fontsize=11)
    ax.tick_params(labelsize=9)


def plot_gradcam(model, images, cls: str | int | None = None, layer: str | None = None, *,
                 weights: str = "best", alpha: float = 0.45, path: str | Path | None = None):
    """One row per image: the input, the Grad-CAM heat map, the overlay, the probabilities.

    images: one file/tensor or a list of them. Saves a PNG when `path` is given; returns
    the matplotlib Figure.
    """
    if not 0 <= alpha <= 1:
        raise CnnlabError(f"alpha (the heat map's opacity) must be between 0 and 1, got {alpha}")
    loaded = load(model, weights)
    if isinstance(images, (str, Path, torch.Tensor)):
        images = [images]
    results = [gradcam(loaded, im, cls, layer) for im in images]
    if not results:
        raise CnnlabError("no images given")
    fig = new_figure(14, 3.5 * len(results) + 0.7)
    first = results[0]
    h, w = first.cam.shape
    fig.suptitle(f"Grad-CAM of {loaded.name} at layer {first.layer} "
                 f"{first.layer_shape[0]}×{first.layer_shape[1]}×{first.layer_shape[2]}, "
                 f"upsampled to {h}×{w}", fontsize=TITLE_SIZE + 1, fontweight="bold")
    axes = fig.subplots(len(results), 4, squeeze=False, width_ratios=[1, 1, 1, 1.1])
    for row, r in zip(axes, results):
        pred = r.predicted
        title = f"{r.label}\nclass {r.class_name!r}: p = {r.probability:.2f}"
        if pred != r.class_index:
            title += f"\n(predicted {loaded.classes[pred]!r}, p = {float(r.probabilities[pred]):.2f})"
        show_image(row[0], r.image, title)
        im = row[1].imshow(r.cam, cmap="jet", vmin=0, vmax=1, interpolation="bilinear")
        hide_ticks(row[1])
        empty = "\n(no positive evidence: all zero)" if not r.cam.any() else ""
        row[1].set_title(f"Grad-CAM for {r.class_name!r}{empty}")
        colorbar(fig, im, row[1], "evidence (1 = strongest)")
        row[2].imshow(r.image, cmap="gray" if r.image.ndim == 2 else None, vmin=0, vmax=1)
        im = row[2].imshow(r.cam, cmap="jet", vmin=0, vmax=1, alpha=alpha, interpolation="bilinear")
        hide_ticks(row[2])
        row[2].set_title("overlay on the image")
        colorbar(fig, im, row[2])
        _draw_probabilities(row[3], r, loaded.classes)
    if path is not None:
        save_figure(fig, path)
    return fig
