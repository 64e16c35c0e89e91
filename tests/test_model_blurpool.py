"""BlurPool2D (Zhang 2019's anti-aliased downsampling): its numbers against the filter worked
out by hand, its shapes and counts against Keras' frozen DepthwiseConv2D, and its exports
checked by Keras and onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import kerasmodels as km
from cnnlab.cli import main
from cnnlab.io.weights import save_weights
from cnnlab.model.build import build_model
from cnnlab.model.summary import summary

# [1, 2, 1] / 4 in each direction, written out
HAND_3 = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float64) / 16
HAND_4 = np.outer([1, 3, 3, 1], [1, 3, 3, 1]).astype(np.float64) / 64


def blur_by_hand(x: np.ndarray, k: np.ndarray, stride: int, pads: tuple[int, int, int, int], mode: str):
    """x (C, H, W); pads (top, bottom, left, right); every output a sum of products, in loops."""
    t, b, left, r = pads
    padded = np.pad(x, ((0, 0), (t, b), (left, r)), mode="constant" if mode == "same" else "reflect")
    c, h, w = padded.shape
    n = k.shape[0]
    out = np.zeros((c, (h - n) // stride + 1, (w - n) // stride + 1))
    for ch in range(c):
        for i in range(out.shape[1]):
            for j in range(out.shape[2]):
                out[ch, i, j] = sum(k[m, q] * padded[ch, i * stride + m, j * stride + q]
                                    for m in range(n) for q in range(n))
    return out


def blur_model(h, w, c, **args):
    spec = {"input": [h, w, c], "layers": [{"BlurPool2D": args}, {"Flatten": {}}, {"Dense": {"units": 2}}]}
    return build_model(spec).eval()


def run(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.layers["blur_pool2d"](torch.from_numpy(x[None]).float())[0].double().numpy()


def test_a_4x4_ramp_by_hand():
    """x[r, c] = 4r + c; filter 3, stride 2, 'same': one zero row and column after (TensorFlow's
    odd pixel). out[0, 0] is the blur's weighted mean of rows 0-2, cols 0-2, whose weights sum
    to 1 around row 1, col 1: 4 * 1 + 1 = 5. At the far edge the zero row and column weigh 1/4
    each, so out[0, 1] and out[1, 1] are the sums written below, term by term."""
    x = np.arange(16, dtype=np.float64).reshape(1, 4, 4)
    got = run(blur_model(4, 4, 1), x)
    # out[1, 1] = sum over m, q in {0, 1} of k1[m] k1[q] (4 (2 + m) + 2 + q), k1 = (1/4, 1/2)
    k1 = (0.25, 0.5)
    out11 = sum(k1[m] * k1[q] * (4 * (2 + m) + 2 + q) for m in (0, 1) for q in (0, 1))
    out01 = sum((0.25, 0.5, 0.25)[m] * k1[q] * (4 * m + 2 + q) for m in range(3) for q in (0, 1))
    np.testing.assert_allclose(got[0, 0, 0], 5.0, atol=1e-6)
    np.testing.assert_allclose(got[0, 0, 1], out01, atol=1e-6)
    np.testing.assert_allclose(got[0, 1, 1], out11, atol=1e-6)


@pytest.mark.parametrize("size,hand", [(3, HAND_3), (4, HAND_4)])
@pytest.mark.parametrize("mode", ["same", "reflect"])
@pytest.mark.parametrize("shape", [(9, 8), (6, 7)])
def test_equals_the_filter_written_out(size, hand, mode, shape):
    h, w = shape
    rng = np.random.default_rng(size + h)
    x = rng.standard_normal((3, h, w))
    got = run(blur_model(h, w, 3, filter_size=size, padding=mode), x)

    def pads(n):  # TensorFlow's 'same': the odd pixel after
        total = max((-(-n // 2) - 1) * 2 + size - n, 0)
        return total // 2, total - total // 2

    want = blur_by_hand(x, hand, 2, (*pads(h), *pads(w)), mode)
    assert got.shape == want.shape == (3, -(-h // 2), -(-w // 2))
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_summary_counts_the_fixed_filter_as_keras_does():
    spec = {"input": [8, 8, 5], "layers": [{"Conv2D": {"filters": 6, "kernel_size": 3}}, {"BlurPool2D": {}},
                                           {"Flatten": {}}, {"Dense": {"units": 2}}]}
    s = summary(spec)
    blur = s.layers[1]
    assert (blur.output_shape, blur.params, blur.trainable) == ((3, 3, 6), 9 * 6, 0)
    assert blur.macs == 3 * 3 * 6 * 9
    k = km.keras()
    L = k.layers
    ref = k.Sequential([k.Input((8, 8, 5)), L.Conv2D(6, 3),
                        L.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False, trainable=False),
                        L.Flatten(), L.Dense(2)])
    assert (s.total_params, s.trainable_params) == (ref.count_params(), sum(
        int(np.prod(v.shape)) for v in ref.trainable_weights))


def test_exports_to_keras_and_onnx_with_the_same_numbers(tmp_path, capsys):
    spec = {"input": [11, 9, 3], "layers": [
        {"Conv2D": {"filters": 4, "kernel_size": 3, "padding": "same", "activation": "relu"}},
        {"BlurPool2D": {}},
        {"GlobalAveragePooling2D": {}},
        {"Dense": {"units": 3, "activation": "softmax"}}]}
    torch.manual_seed(0)
    model = build_model(spec).eval()
    path = tmp_path / "blur.safetensors"
    save_weights(path, model, {"classes": ["a", "b", "c"], "input": spec["input"], "resize": "stretch",
                               "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}})
    images = km.pixels((11, 9, 3), n=4, seed=3)
    x = (torch.from_numpy(images).float().permute(0, 3, 1, 2) / 255 - 0.5) / 0.25
    with torch.no_grad():
        expected = model.predict_proba(x).numpy()
    assert main(["export", str(path), "--format", "keras", "--out", str(tmp_path / "m.keras")]) == 0
    keras_model = km.keras().saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(keras_model.predict(images.astype("float32"), verbose=0), expected, atol=1e-5)
    assert keras_model.count_params() == summary(spec).total_params
    assert main(["export", str(path), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"pixels": images.astype("float32")})[0], expected, atol=1e-5)


def test_reflect_padding_is_refused_for_keras_in_one_sentence(tmp_path, capsys):
    spec = {"input": [8, 8, 3], "layers": [{"BlurPool2D": {"padding": "reflect"}}, {"Flatten": {}},
                                           {"Dense": {"units": 2, "activation": "softmax"}}]}
    path = tmp_path / "r.safetensors"
    save_weights(path, build_model(spec), {"classes": ["a", "b"], "input": [8, 8, 3], "resize": "stretch",
                                           "normalization": {"mean": [0.0] * 3, "std": [1.0] * 3}})
    assert main(["export", str(path), "--format", "keras"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "padding reflect" in err[0] and "ONNX" in err[0]
