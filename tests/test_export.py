"""`cnnlab export` round trips, each checked by an independent runtime.

cnnlab -> .keras -> Keras 3 (torch backend) predicts what cnnlab predicts; cnnlab -> ONNX ->
onnxruntime the same, at any batch size; a Keras file read by cnnlab and written back gives
Keras the original model's predictions. Models carry non-trivial BN statistics and a
measured (per-channel) normalisation, so the preprocessing inside the files is checked too.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import kerasmodels as km
from cnnlab.cli import main
from cnnlab.io.weights import save_weights
from cnnlab.model.build import build_model
from cnnlab.model.summary import summary

SPEC = {
    "input": [12, 10, 3],
    "layers": [
        {"ZeroPadding2D": {"padding": [[1, 0], [0, 1]]}},
        {"Conv2D": {"filters": 4, "kernel_size": 3, "strides": 2, "padding": "same", "activation": "relu"}},
        {"BatchNormalization": {"epsilon": 0.01}},
        {"DepthwiseConv2D": {"kernel_size": 3, "padding": "same", "depth_multiplier": 2}},
        {"SeparableConv2D": {"filters": 5, "kernel_size": 3, "padding": "same", "activation": "swish"}},
        {"ResidualBlock": {"filters": 6, "strides": 2}},
        {"MaxPooling2D": {"pool_size": 2, "padding": "same"}},
        {"Flatten": {}},
        {"BatchNormalization": {"scale": False}},
        {"Dropout": {"rate": 0.2}},
        {"Dense": {"units": 3, "activation": "softmax"}},
    ],
}
CLASSES = ["ant", "bee", "cicada"]
NORM = {"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]}


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(SPEC, classes=3).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith(("running_mean", "bias")):
                t.copy_(torch.randn(t.shape, generator=g) * 0.3)
            elif name.endswith("weight") and t.ndim > 1:  # larger than torch's init: answers vary per image
                t.copy_(torch.randn(t.shape, generator=g) * 0.6)
    path = tmp_path_factory.mktemp("export") / "model.safetensors"
    save_weights(path, model, {"classes": CLASSES, "input": SPEC["input"], "normalization": NORM,
                               "resize": "stretch"})
    return path


def ours(path, images):
    from cnnlab.export import cnnlab_probabilities
    from cnnlab.run import open_any

    return cnnlab_probabilities(open_any(path), images)


def test_keras_export_round_trip(weights_file, tmp_path, capsys):
    out = tmp_path / "model.keras"
    assert main(["export", str(weights_file), "--format", "keras", "--out", str(out)]) == 0
    assert "parity check on 8 images with Keras" in capsys.readouterr().out
    k = km.keras()
    model = k.saving.load_model(out)
    images = km.pixels((12, 10, 3), n=6, seed=5)
    expected = ours(weights_file, images)
    got = model.predict(images.astype("float32"), verbose=0)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert np.ptp(expected, axis=0).max() > 0.05
    # Keras counts what cnnlab counts (the preprocessing layer has no weights).
    assert model.count_params() == summary(build_model(SPEC, classes=3)).total_params
    # Read back by cnnlab, the file names its classes (predict said class_0, class_1, ...).
    image = tmp_path / "x.png"
    Image.fromarray(images[0]).save(image)
    capsys.readouterr()
    assert main(["predict", str(out), str(image), "--out", str(tmp_path / "p.json")]) == 0
    row = json.loads((tmp_path / "p.json").read_text())[0]
    assert row["label"] == CLASSES[int(np.argmax(got[0]))]


def test_onnx_export_round_trip_and_predict(weights_file, tmp_path, capsys):
    import onnx
    import onnxruntime as ort

    out = tmp_path / "model.onnx"
    assert main(["export", str(weights_file), "--format", "onnx", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "with onnxruntime" in printed and "input raw RGB pixels 0-255, shape (batch, 12, 10, 3)" in printed
    proto = onnx.load(str(out))
    assert proto.opset_import[0].version >= 17
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["classes"]) == CLASSES and "0-255" in props["input_layout"]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for n in (1, 5):  # dynamic batch
        images = km.pixels((12, 10, 3), n=n, seed=n)
        got = session.run(None, {"pixels": images.astype("float32")})[0]
        np.testing.assert_allclose(got, ours(weights_file, images), atol=1e-5)

    # `cnnlab predict model.onnx` gives the rows `cnnlab predict model.safetensors` gives.
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, a in enumerate(km.pixels((20, 16, 3), n=4, seed=9)):
        Image.fromarray(a).save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    rows = {}
    for src in (out, weights_file):
        dest = tmp_path / f"{src.suffix[1:]}.json"
        assert main(["predict", str(src), str(folder), "--out", str(dest)]) == 0
        rows[src.suffix] = json.loads(dest.read_text())
    a, b = rows[".onnx"], rows[".safetensors"]
    assert [r["path"] for r in a] == [r["path"] for r in b]
    for ra, rb in zip(a, b):
        assert ra["label"] == rb["label"] and bool(ra["error"]) == bool(rb["error"])
        if rb["confidence"] is not None:
            assert abs(ra["confidence"] - rb["confidence"]) < 1e-5


def test_keras_file_read_and_written_back(tmp_path):
    """Keras residual model -> cnnlab -> .keras -> Keras: the original's predictions."""
    from cnnlab.export import export

    model, _ = km.residual_functional()
    src = tmp_path / "resnetish.h5"
    model.save(src)
    r = export(src, "keras", tmp_path / "back.keras")
    assert r.max_difference is not None and r.max_difference < 1e-4
    back = km.keras().saving.load_model(r.path)
    images = km.pixels((10, 10, 3), n=5, seed=2)
    np.testing.assert_allclose(back.predict(images.astype("float32"), verbose=0),
                               model.predict(images.astype("float32"), verbose=0), atol=1e-4)


def test_export_errors(weights_file, tmp_path, capsys):
    assert main(["export", str(weights_file), "--format", "onnx", "--out", str(tmp_path / "x.keras")]) == 2
    assert "an ONNX file's name must end in .onnx" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "missing.onnx"), str(tmp_path)]) == 2
    assert "no such ONNX file" in capsys.readouterr().err


def test_keras_file_to_onnx(tmp_path):
    """Keras model of every layer type -> cnnlab -> ONNX -> onnxruntime: Keras' own predictions."""
    import onnxruntime as ort

    from cnnlab.export import export

    model = km.every_layer_sequential()
    src = tmp_path / "every.keras"
    model.save(src)
    r = export(src, "onnx", tmp_path / "every.onnx")
    assert r.max_difference < 1e-5
    session = ort.InferenceSession(str(r.path), providers=["CPUExecutionProvider"])
    images = km.pixels((11, 13, 3), n=4, seed=3).astype("float32")
    np.testing.assert_allclose(session.run(None, {"pixels": images})[0], model.predict(images, verbose=0), atol=1e-4)


def test_a_grayscale_model_says_it_takes_one_channel(tmp_path, capsys):
    """A --channels 1 model's files take (batch, h, w, 1): the message and metadata say so
    (they said RGB, 3), as onnxruntime's own view of the input does."""
    import onnxruntime as ort

    spec = {"input": [8, 6, 1], "layers": [{"Conv2D": {"filters": 2, "kernel_size": 3, "activation": "relu"}},
                                           {"Flatten": {}}, {"Dense": {"units": 2, "activation": "softmax"}}]}
    torch.manual_seed(0)
    path = tmp_path / "gray.safetensors"
    save_weights(path, build_model(spec, classes=2).eval(),
                 {"classes": ["a", "b"], "input": spec["input"], "normalization": {"mean": [0.5], "std": [0.25]}})
    out = tmp_path / "gray.onnx"
    assert main(["export", str(path), "--format", "onnx", "--out", str(out)]) == 0
    assert "input raw grayscale pixels 0-255, shape (batch, 8, 6, 1)" in capsys.readouterr().out
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == [8, 6, 1]
    assert "(batch, height, width, 1), grayscale" in session.get_modelmeta().custom_metadata_map["input_layout"]
    images = km.pixels((8, 6, 1), n=3, seed=4)
    got = session.run(None, {"pixels": images.astype("float32")})[0]
    np.testing.assert_allclose(got, ours(path, images), atol=1e-5)
