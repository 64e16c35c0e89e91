"""The photo recipe's nets: counted as Keras counts them, exported to Keras and ONNX with the same
numbers (Keras and onnxruntime are the oracles), and explained by Grad-CAM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import kerasmodels as km
from cnnlab.cli import main
from cnnlab.io.weights import save_weights
from cnnlab.model.build import build_model
from cnnlab.model.spec import load_spec
from cnnlab.model.summary import summary


@pytest.fixture(scope="module")
def photonet_file(tmp_path_factory):
    """photonet_small at 48x48 (its blocks are the same at any size) with random weights and
    moving statistics, so that batch norm's arithmetic counts in the comparison."""
    spec = load_spec("photonet_small").with_(input=(48, 48, 3), classes=3)
    torch.manual_seed(0)
    model = build_model(spec)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    model.eval()
    path = tmp_path_factory.mktemp("photonet") / "photonet.safetensors"
    save_weights(path, model, {"classes": ["a", "b", "c"], "input": [48, 48, 3], "resize": "stretch",
                               "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}})
    images = km.pixels((48, 48, 3), n=4, seed=5)
    x = (torch.from_numpy(images).float().permute(0, 3, 1, 2) / 255 - 0.5) / 0.25
    with torch.no_grad():
        expected = model.predict_proba(x).numpy()
    return path, spec, images, expected


def test_exports_to_keras_with_keras_own_count_and_numbers(photonet_file, tmp_path):
    path, spec, images, expected = photonet_file
    assert main(["export", str(path), "--format", "keras", "--out", str(tmp_path / "m.keras")]) == 0
    keras_model = km.keras().saving.load_model(tmp_path / "m.keras")
    s = summary(spec)
    assert keras_model.count_params() == s.total_params
    assert sum(int(np.prod(v.shape)) for v in keras_model.trainable_weights) == s.trainable_params
    np.testing.assert_allclose(keras_model.predict(images.astype("float32"), verbose=0), expected, atol=1e-4)


def test_exports_to_onnx_with_the_same_numbers(photonet_file, tmp_path):
    path, _, images, expected = photonet_file
    assert main(["export", str(path), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"pixels": images.astype("float32")})[0], expected, atol=1e-4)


def test_the_three_widths_grow_in_work():
    macs = [summary(load_spec(name)).total_macs for name in ("photonet_small", "photonet", "photonet_large")]
    assert macs == sorted(macs) and macs[1] > 1.5 * macs[0]


def test_gradcam_looks_at_the_last_residual_block_and_equals_captum():
    import captum.attr as captum  # declared in [dev]: a broken install must fail, not skip

    from cnnlab.viz._model import gradcam_layer
    from cnnlab.viz.gradcam import gradcam

    model = build_model("photonet_small", input=(64, 64, 3), classes=3, seed=0).eval()
    assert gradcam_layer(model).name == "residual_block_2"  # the end of the last stage, before pooling
    x = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    ours = gradcam(model, x, cls=2)
    ref = captum.LayerGradCam(model, model.layers["residual_block_2"]).attribute(
        x[None], target=2, relu_attributions=True)
    assert ours.coarse.shape == (4, 4) == tuple(ref.shape[2:])  # 64 px / the stride 16
    assert np.allclose(ours.coarse, ref[0, 0].detach().numpy(), atol=1e-5)
