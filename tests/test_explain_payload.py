"""The explainer's data and page: every number it embeds is the model's own, and the
arithmetic the page shows (redone here in numpy, as the page does it in JavaScript) adds
up to it. Browser tests are in test_explain_browser.py, the server in test_explain_server.py.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from cnnlab.explain.page import build_page
from cnnlab.explain.payload import explain, tensor
from cnnlab.model.build import build_model
from imagegen import draw


def meta_for(model, classes):
    return {"classes": classes, "input": list(model.input_shape), "resize": "stretch",
            "normalization": {"mean": [0.5] * model.input_shape[2], "std": [0.25] * model.input_shape[2]}}


def layer(payload, name):
    return next(L for L in payload["layers"] if L["name"] == name)


def conv_by_hand(payload, li, k, y, x):
    """One conv neuron, the way the page computes it: padded patch * kernel, summed, + bias."""
    L, prev = payload["layers"][li], payload["layers"][li - 1]
    inp = tensor(payload, prev["out"])  # (C, H, W)
    kernel = tensor(payload, L["conv"]["kernel"])  # (out, in/groups, kh, kw)
    top, bottom, left, right = L["conv"]["pad"]
    padded = np.pad(inp, ((0, 0), (top, bottom), (left, right))).astype(np.float64)
    (sh, sw), (dh, dw) = L["conv"]["stride"], L["conv"]["dilation"]
    _, cin, kh, kw = kernel.shape
    g = k // (kernel.shape[0] // L["conv"]["groups"])
    patch = padded[g * cin:(g + 1) * cin, y * sh: y * sh + (kh - 1) * dh + 1: dh,
                   x * sw: x * sw + (kw - 1) * dw + 1: dw]
    bias = tensor(payload, L["conv"]["bias"])[k] if L["conv"]["bias"] else 0.0
    return float((patch * kernel[k]).sum() + bias)


@pytest.fixture(scope="module")
def loaded(trained_run):
    from cnnlab.run import Run

    run = Run(trained_run)
    model, meta = run.load_model()
    pre = run.preprocessor(meta)
    path = run.split()["test"][-1][0]
    image = pre.load_uint8(path)
    return model, meta, image, explain(model, meta, image, name="test.png")


def test_every_layer_output_is_the_models_own(loaded):
    model, meta, image, payload = loaded
    from cnnlab.data.preprocess import Preprocessor

    x = Preprocessor.from_meta(meta).to_tensor(image).unsqueeze(0)
    with torch.no_grad():
        feats = model.features(x)
        probs = model.predict_proba(x)[0]
    names = [L["name"] for L in payload["layers"]]
    assert names == ["input"] + list(feats)
    np.testing.assert_array_equal(tensor(payload, payload["layers"][0]["out"]), x[0].numpy())
    for name, out in feats.items():
        np.testing.assert_array_equal(tensor(payload, layer(payload, name)["out"]), out[0].numpy())
    np.testing.assert_allclose(payload["probabilities"], probs.numpy(), rtol=1e-6)
    assert payload["prediction"]["class"] == meta["classes"][int(probs.argmax())]
    assert [L["params"] for L in payload["layers"][1:]] == [224, 0, 584, 0, 0, 786]


def test_conv_arithmetic_adds_up_to_the_models_value(loaded):
    model, meta, image, payload = loaded
    for name in ("conv2d", "conv2d_1"):
        li = next(i for i, L in enumerate(payload["layers"]) if L["name"] == name)
        L = payload["layers"][li]
        pre, out = tensor(payload, L["pre"]), tensor(payload, L["out"])
        C, H, W = out.shape
        for k, y, x in [(0, 0, 0), (C - 1, H - 1, W - 1), (C // 2, H // 2, W // 3)]:
            by_hand = conv_by_hand(payload, li, k, y, x)
            assert by_hand == pytest.approx(float(pre[k, y, x]), abs=1e-5)
            assert max(0.0, by_hand) == pytest.approx(float(out[k, y, x]), abs=1e-5)  # relu
    assert layer(payload, "conv2d")["conv"]["pad"] == [1, 1, 1, 1]  # 'same', 3x3
    assert layer(payload, "conv2d_1")["conv"]["pad"] == [0, 0, 0, 0]  # 'valid'


def test_pool_and_dense_and_softmax_add_up(loaded):
    model, meta, image, payload = loaded
    pool_in = tensor(payload, layer(payload, "conv2d")["out"])
    pooled = tensor(payload, layer(payload, "max_pooling2d")["out"])
    assert pooled[3, 5, 7] == pool_in[3, 10:12, 14:16].max()

    D = layer(payload, "dense")["dense"]
    top = tensor(payload, D["top"])  # (units, k, 4): index, x, w, w*x
    flat = tensor(payload, layer(payload, "flatten")["out"])
    logits = tensor(payload, layer(payload, "dense")["out"])
    for j in range(len(logits)):
        idx = top[j, :, 0].astype(int)
        np.testing.assert_array_equal(top[j, :, 1], flat[idx])
        assert np.all(np.diff(np.abs(top[j, :, 3])) <= 1e-7)  # largest terms first
        total = top[j, :, 3].astype(np.float64).sum() + tensor(payload, D["rest"])[j] + tensor(payload, D["bias"])[j]
        assert total == pytest.approx(float(logits[j]), abs=1e-5)
    e = np.exp(np.array(payload["logits"]) - max(payload["logits"]))
    np.testing.assert_allclose(e / e.sum(), payload["probabilities"], rtol=1e-5)


def test_asymmetric_same_padding_and_stride_are_exact():
    """TensorFlow's 'same' with stride 2 pads only bottom/right: the page must know."""
    spec = {"input": [9, 10, 1], "layers": [
        {"Conv2D": {"filters": 3, "kernel_size": 4, "strides": 2, "padding": "same", "activation": "tanh"}},
        {"DepthwiseConv2D": {"kernel_size": 3, "padding": "same", "depth_multiplier": 2}},
        {"Flatten": {}}, {"Dense": {"units": "classes", "activation": "softmax"}}]}
    model = build_model(spec, classes=3, seed=0).eval()
    image = draw("cross", (9, 10), np.random.default_rng(1))[:, :, :1]
    payload = explain(model, meta_for(model, ["a", "b", "c"]), image)
    L = payload["layers"][1]
    assert L["conv"]["pad"] == [1, 2, 1, 1] and L["conv"]["stride"] == [2, 2]
    out, pre = tensor(payload, L["out"]), tensor(payload, L["pre"])
    for k, y, x in [(0, 0, 0), (2, 4, 4), (1, 2, 3)]:
        v = conv_by_hand(payload, 1, k, y, x)
        assert v == pytest.approx(float(pre[k, y, x]), abs=1e-5)
        assert np.tanh(v) == pytest.approx(float(out[k, y, x]), abs=1e-5)
    D = payload["layers"][2]  # depthwise: groups = input channels, no activation (pre == out)
    assert D["conv"]["groups"] == 3 and "pre" not in D
    dout = tensor(payload, D["out"])
    for k, y, x in [(0, 0, 0), (5, 4, 4), (3, 1, 2)]:
        assert conv_by_hand(payload, 2, k, y, x) == pytest.approx(float(dout[k, y, x]), abs=1e-5)


def test_batchnorm_activation_and_composite_layers():
    spec = {"input": [12, 12, 3], "layers": [
        {"Conv2D": {"filters": 4, "kernel_size": 3, "padding": "same", "use_bias": False}},
        {"BatchNormalization": {}}, {"Activation": {"activation": "gelu"}},
        {"ResidualBlock": {"filters": 6, "strides": 2}}, {"AveragePooling2D": {"pool_size": 4, "padding": "same"}},
        {"GlobalAveragePooling2D": {}}, {"Dropout": {"rate": 0.5}},
        {"Dense": {"units": 5, "activation": "relu"}}, {"Dense": {"units": "classes", "activation": "softmax"}}]}
    model = build_model(spec, classes=2, seed=0)
    bn = model.layers["batch_normalization"]
    with torch.no_grad():  # non-trivial running statistics, as after training
        bn.running_mean.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
        bn.running_var.copy_(torch.tensor([0.5, 2.0, 1.5, 1.0]))
        bn.weight.copy_(torch.tensor([1.5, 0.5, -1.0, 2.0]))
    model.eval()
    payload = explain(model, meta_for(model, ["x", "y"]), draw("square", (12, 12)))
    kinds = [L["kind"] for L in payload["layers"]]
    assert kinds == ["input", "conv", "bn", "act", "other", "pool", "gap", "dropout", "dense", "dense"]
    L = layer(payload, "batch_normalization")
    x, y = tensor(payload, payload["layers"][1]["out"]), tensor(payload, L["out"])
    B = {k: tensor(payload, L["bn"][k]) for k in ("mean", "var", "gamma", "beta")}
    c = 2
    expect = (x[c] - B["mean"][c]) / np.sqrt(B["var"][c] + L["bn"]["eps"]) * B["gamma"][c] + B["beta"][c]
    np.testing.assert_allclose(y[c], expect, atol=1e-5)
    act = layer(payload, "activation")
    assert act["activation"] == "gelu"
    last = payload["layers"][-1]
    assert last["activation"] is None and payload["model"]["output_activation"] == "softmax"
    assert layer(payload, "dense")["activation"] == "relu" and "pre" in layer(payload, "dense")
    assert layer(payload, "average_pooling2d")["pool"] == {"kind": "avg", "size": [4, 4], "stride": [4, 4],
                                                          "pad": [1, 1, 1, 1]}


def test_page_is_self_contained_and_escapes_names(loaded):
    model, meta, image, _ = loaded
    evil = "</script><script>alert(1)</script>{{CONFIG}}.png"
    payload = explain(model, meta, image, name=evil)
    html = build_page(payload, run_name="small")
    assert html.count("</script>") == 3  # payload, config, code: the name closed nothing
    assert "<script src" not in html and "<link" not in html
    assert not re.search(r"""(src|href|url\()\s*=?\s*["']?(https?:)?//""", html)
    assert "Content-Security-Policy" in html
    data = re.search(r'<script type="application/json" id="cnnlab-payload">(.*?)</script>', html, re.S)
    assert json.loads(data.group(1))["image"]["name"] == evil
    config = re.search(r'<script type="application/json" id="cnnlab-config">(.*?)</script>', html, re.S)
    assert json.loads(config.group(1))["mode"] == "file"


def test_cli_writes_the_page_and_names_bad_inputs(trained_run, tmp_path, capsys):
    from cnnlab.cli import main

    out = tmp_path / "page.html"
    assert main(["explain", str(trained_run), "--out", str(out)]) == 0
    assert "cnnlab-payload" in out.read_text() and "wrote" in capsys.readouterr().out
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    assert main(["explain", str(trained_run), "--image", str(bad), "--out", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err
    assert "notes.png" in err and "not an image" in err and "Traceback" not in err
    assert not (tmp_path / "x.html").exists()
    assert main(["explain", str(trained_run), "--serve", "--out", str(out)]) == 2
    assert "choose one" in capsys.readouterr().err
    assert main(["explain", str(tmp_path / "nope")]) == 2
    assert "no such run directory" in capsys.readouterr().err
