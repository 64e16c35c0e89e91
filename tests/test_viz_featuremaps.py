"""Feature maps: the shapes the summary reports, the model's own activations, a readable figure."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.errors import CnnlabError
from cnnlab.io.weights import read_metadata
from cnnlab.model.build import build_model
from cnnlab.model.summary import summary
from cnnlab.run import Run
from cnnlab.viz.featuremaps import feature_maps, plot_featuremaps


def a_test_image(run: Path) -> str:
    return Run(run).split()["test"][0][0]


def test_feature_map_shapes_are_the_summary_shapes(trained_run):
    image = a_test_image(trained_run)
    maps = feature_maps(trained_run, image)
    rows = {r.name: r for r in summary(read_metadata(trained_run / "weights/best.safetensors")["spec"]).layers}
    assert list(maps) == ["conv2d", "max_pooling2d", "conv2d_1", "max_pooling2d_1"]  # every conv and pool
    for name, m in maps.items():
        h, w, c = rows[name].output_shape
        assert tuple(m.shape) == (c, h, w)
    model, meta = Run(trained_run).load_model()
    x = Run(trained_run).preprocessor(meta).load(image)
    with torch.no_grad():
        expected = model.layers["conv2d"](x[None])[0]
    assert torch.allclose(maps["conv2d"], expected)  # exactly what the layer computes
    assert (maps["conv2d"] >= 0).all()  # after its ReLU


def test_residual_model_and_chosen_layers():
    model = build_model("resnet_small", classes=2, seed=0, input=[32, 32, 3])
    x = torch.rand(3, 32, 32)
    maps = feature_maps(model, x, ["activation", "residual_block_2"])
    rows = {r.name: r.output_shape for r in summary(model.spec).layers}
    for name, m in maps.items():
        assert tuple(m.shape) == (rows[name][2], rows[name][0], rows[name][1])
    assert list(feature_maps(model, x)) == ["conv2d", "residual_block", "residual_block_1", "residual_block_2"]


def test_plot_featuremaps_tiles_each_channel(trained_run, tmp_path):
    image = a_test_image(trained_run)
    out = tmp_path / "maps.png"
    fig = plot_featuremaps(trained_run, image, max_channels=6, path=out)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.height > im.width > 700  # tiled downwards, not squeezed
    titles = [sf._suptitle.get_text() for sf in fig.subfigs]
    assert titles[0] == "input (32, 32, 3)"
    assert titles[1] == "conv2d (Conv2D)  output (32, 32, 8); first 6 of 8 channels"
    assert titles[4].startswith("max_pooling2d_1 (MaxPooling2D)  output (7, 7, 8)")
    (im,) = [ax.get_images()[0] for ax in fig.subfigs[3].axes if ax.get_images()]
    mosaic = np.ma.filled(im.get_array(), np.nan)  # 6 tiles of 14x14, 8 to a row: one row
    gap = (mosaic.shape[1] - 6 * 14) // 5
    assert mosaic.shape[0] == 14 and np.isnan(mosaic[:, 14:14 + gap]).all()
    maps = feature_maps(trained_run, image)
    x = 4 * (14 + gap)
    assert np.allclose(mosaic[:, x:x + 14], maps["conv2d_1"][4].numpy())
    assert "predicted" in fig._suptitle.get_text()


def test_featuremap_errors(trained_run):
    image = a_test_image(trained_run)
    with pytest.raises(CnnlabError, match="'flatten' .* no height and width"):
        feature_maps(trained_run, image, ["flatten"])
    with pytest.raises(CnnlabError, match="no layer with a spatial output named 'conv2d_9'"):
        feature_maps(trained_run, image, ["conv2d_9"])
    with pytest.raises(CnnlabError, match="no such image file"):
        feature_maps(trained_run, "missing.jpg")
    with pytest.raises(CnnlabError, match=r"expected an image tensor of shape \(3, 32, 32\)"):
        feature_maps(trained_run, torch.zeros(3, 16, 16))
    with pytest.raises(CnnlabError, match="no such run directory"):
        feature_maps("no/such/run", image)
