"""Filters of a trained run: the right weights, drawn as RGB patches or per-channel grids."""

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.errors import CnnlabError
from cnnlab.model.build import build_model
from cnnlab.run import Run
from cnnlab.viz._model import conv_layers
from cnnlab.viz.filters import filter_weights, plot_filters, rgb_patches


def shown_tiles(fig, n: int, k: int, cols: int) -> tuple[list[np.ndarray], object]:
    """The n k x k tiles of the figure's one image, `cols` to a row, and that image.

    Tiles are drawn as one mosaic with empty pixels between them; the gap is read off
    the mosaic's size.
    """
    (im,) = [ax.get_images()[0] for ax in fig.axes if ax.get_images()]
    a = np.asarray(im.get_array())
    rows = -(-n // cols)
    gy = (a.shape[0] - rows * k) // (rows - 1) if rows > 1 else 0
    gx = (a.shape[1] - cols * k) // (cols - 1) if cols > 1 else 0
    tiles = [a[(i // cols) * (k + gy):(i // cols) * (k + gy) + k, (i % cols) * (k + gx):(i % cols) * (k + gx) + k]
             for i in range(n)]
    return tiles, im


def test_first_layer_filters_are_rgb_patches_of_the_weights(trained_run, tmp_path):
    model, _ = Run(trained_run).load_model()
    name, w = filter_weights(model)
    assert name == "conv2d" and np.array_equal(w, model.layers["conv2d"].conv.weight.detach().numpy())
    out = tmp_path / "f.png"
    fig = plot_filters(trained_run, path=out)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 500
    shown, im = shown_tiles(fig, 8, 3, 8)  # 8 filters, 3x3 pixels of RGB (+ alpha), one row
    assert np.asarray(im.get_array()).shape[2] == 4
    for i in (0, 5, 7):
        assert np.allclose(shown[i][..., :3], rgb_patches(w)[i]) and (shown[i][..., 3] == 1).all()
    assert "8 filters of 3×3×3" in " ".join(fig._suptitle.get_text().split())


def test_rgb_patch_scaling():
    w = np.zeros((2, 3, 3, 3), np.float32)
    w[0, 0, 0, 0], w[0, 2, 1, 1], w[1, 1, 2, 2] = 2.0, -1.0, -0.5
    p = rgb_patches(w)
    assert p.shape == (2, 3, 3, 3)
    assert p[0, 0, 0, 0] == 1.0 and p[0, 1, 1, 2] == 0.25 and p[0, 2, 2, 1] == 0.5  # grey = 0
    assert p[1, 2, 2, 1] == 0.0  # each filter on its own scale: its largest |w| reaches 0 or 1


def test_deeper_layer_is_a_filters_by_channels_grid(trained_run):
    fig = plot_filters(trained_run, "conv2d_1", max_filters=5, max_channels=3)
    model, _ = Run(trained_run).load_model()
    w = model.layers["conv2d_1"].conv.weight.detach().numpy()
    shown, im = shown_tiles(fig, 5 * 3, 3, 3)
    assert np.allclose(shown[1 * 3 + 2], w[1, 2]) and np.allclose(shown[4 * 3], w[4, 0])  # row: filter
    lo, hi = im.get_clim()
    assert lo == -hi and hi >= np.abs(w[:5, :3]).max() - 1e-6  # one symmetric scale for the layer
    title = " ".join(fig._suptitle.get_text().split())  # the title wraps to the figure's width
    assert "showing the first 5 of 8 filters and the first 3 of 8 input channels" in title


def test_composite_layers_have_summary_names():
    model = build_model("resnet_small", classes=3, seed=0)
    names = list(conv_layers(model))
    assert names[:4] == ["conv2d", "residual_block/conv1", "residual_block/conv2", "residual_block_1/conv1"]
    assert "residual_block_1/shortcut" in names and "residual_block/shortcut" not in names
    fig = plot_filters(model, "residual_block_1/shortcut", max_filters=4, max_channels=4)
    shown, _ = shown_tiles(fig, 16, 1, 4)
    conv = model.layers["residual_block_1"].shortcut.shortcut.conv
    assert np.allclose(shown[6], conv.weight[1, 2].detach().numpy())  # 1x1 kernels, still one tile each


def test_filter_errors_name_the_layer(trained_run):
    with pytest.raises(CnnlabError, match="no convolution layer named 'conv2' .*choose from conv2d, conv2d_1"):
        plot_filters(trained_run, "conv2")
    with pytest.raises(CnnlabError, match="not RGB patches"):
        plot_filters(trained_run, "conv2d_1", view="rgb")
    dense_only = build_model({"input": [4, 4, 1], "layers": [{"Flatten": {}}, {"Dense": {"units": 2}}]})
    with pytest.raises(CnnlabError, match="no convolution layers"):
        plot_filters(dense_only)
    with torch.no_grad():
        assert plot_filters(trained_run, view="channels").axes  # the first layer as a grid works too


def test_grey_model_with_depthwise_and_separable_layers():
    spec = {"input": [20, 20, 1], "layers": [
        {"Conv2D": {"filters": 6, "kernel_size": 5, "activation": "relu"}},
        {"DepthwiseConv2D": {"kernel_size": 3}},
        {"SeparableConv2D": {"filters": 4, "kernel_size": 3}},
        {"Flatten": {}},
        {"Dense": {"units": 3, "activation": "softmax"}}]}
    model = build_model(spec, seed=0)
    assert list(conv_layers(model)) == ["conv2d", "depthwise_conv2d", "separable_conv2d/depthwise",
                                        "separable_conv2d/pointwise"]
    fig = plot_filters(model)  # one grey input channel: a grid of 5x5 kernels, not RGB patches
    shown, _ = shown_tiles(fig, 6, 5, 6)
    assert np.allclose(shown[2], model.layers["conv2d"].conv.weight[2, 0].detach().numpy())
    depthwise = model.layers["separable_conv2d"][0].conv.weight  # 6 channels -> 6 kernels
    shown, _ = shown_tiles(plot_filters(model, "separable_conv2d/depthwise"), 6, 3, 6)
    assert np.allclose(shown[5], depthwise[5, 0].detach().numpy())
