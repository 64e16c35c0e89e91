"""Finding the layers a visualisation needs inside a cnnlab CNN, by their Keras names.

Top-level layers are named as in the summary (conv2d, max_pooling2d_1, residual_block);
convolutions inside composite layers get the summary's child names
(``residual_block/conv1``, ``residual_block_1/shortcut``, ``separable_conv2d/depthwise``).
"""

from __future__ import annotations

import difflib
from collections import OrderedDict

from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.model.layers import KerasConv

CONV_TYPES = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "ResidualBlock", "Residual")
POOL_TYPES = ("MaxPooling2D", "AveragePooling2D")
# Layers that change values but not the spatial map: Grad-CAM looks past them to the end of a block.
ELEMENTWISE_TYPES = ("BatchNormalization", "Activation", "Dropout", "SpatialDropout2D", "ReLU", "LeakyReLU")


def unknown(name: str, choices: list[str], what: str) -> CnnlabError:
    """'no conv layer named X (did you mean Y?); choose from A, B' as one sentence."""
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    listed = ", ".join(choices) if choices else "none in this model"
    return CnnlabError(f"no {what} named {name!r}{hint}; choose from {listed}")


def conv_layers(model) -> "OrderedDict[str, nn.Conv2d]":
    """Every convolution of the model, in order, keyed by its summary name."""
    out: "OrderedDict[str, nn.Conv2d]" = OrderedDict()
    for t in model.traced:
        module = model.layers[t.name]
        if isinstance(module, KerasConv):
            out[t.name] = module.conv
        elif t.type == "SeparableConv2D":
            out[f"{t.name}/depthwise"] = module[0].conv
            out[f"{t.name}/pointwise"] = module[1].conv
        elif t.children:
            by_name = {path.rsplit(".", 1)[-1]: m for path, m in module.named_modules() if path}
            for child in t.children:
                m = by_name.get(child.name.rsplit("/", 1)[-1])
                if isinstance(m, KerasConv):
                    out[child.name] = m.conv
    return out


def spatial_layers(model) -> list:
    """TracedLayers whose output is still an image (height, width, channels)."""
    return [t for t in model.traced if len(t.output_shape) == 3]


def pick_spatial(model, names: list[str] | None = None) -> list:
    """The layers to show as feature maps: the given names, or every conv and pool layer."""
    spatial = spatial_layers(model)
    if not names:
        chosen = [t for t in spatial if t.type in CONV_TYPES + POOL_TYPES]
        return chosen or spatial
    by_name = {t.name: t for t in model.traced}
    out = []
    for name in names:
        t = by_name.get(name)
        if t is None:
            raise unknown(name, [s.name for s in spatial], "layer with a spatial output")
        if len(t.output_shape) != 3:
            raise CnnlabError(f"layer {name!r} ({t.type}) outputs {tuple(t.output_shape)}, which has "
                              f"no height and width to draw; choose from {', '.join(s.name for s in spatial)}")
        out.append(t)
    return out


def gradcam_layer(model, name: str | None = None):
    """The layer Grad-CAM looks at: `name`, or the end of the last convolutional block.

    The default is the last convolution (or residual block), followed forward over the
    batch norm / activation / dropout layers after it, so the maps are the block's final,
    rectified output, before any pooling shrinks them.
    """
    spatial = spatial_layers(model)
    if name is not None:
        return pick_spatial(model, [name])[0]
    convs = [i for i, t in enumerate(model.traced) if t.type in CONV_TYPES and len(t.output_shape) == 3]
    if not convs:
        if not spatial:
            raise CnnlabError("this model has no layer with a spatial output, so Grad-CAM has nothing to map")
        return spatial[-1]
    i = convs[-1]
    while i + 1 < len(model.traced) and model.traced[i + 1].type in ELEMENTWISE_TYPES:
        i += 1
    return model.traced[i]
