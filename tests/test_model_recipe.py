"""The fast recipe's model pieces: whitening stem, BN without scale, Dirac init, Rescaling.

Oracles: numpy's own patch extraction, covariance and eigendecomposition (not the layer's
torch code), Keras' parameter rules by hand, and torch ops written out by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import cnnlab
from cnnlab.model.layers import data_init
from cnnlab.model.summary import summary


def real_crops(n: int = 48, size: int = 32, seed: int = 0) -> np.ndarray:
    """n random size x size crops of a real photo (matplotlib's Grace Hopper), (N, H, W, 3) floats."""
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        photo = np.asarray(Image.open(f).convert("RGB").resize((128, 150)), dtype=np.float64) / 255
    rng = np.random.default_rng(seed)
    tops = rng.integers(0, photo.shape[0] - size, n)
    lefts = rng.integers(0, photo.shape[1] - size, n)
    return np.stack([photo[t:t + size, l:l + size] for t, l in zip(tops, lefts)])


def numpy_patches(images: np.ndarray, k: int = 2) -> np.ndarray:
    """Every k x k patch of NHWC images as a row of (C, kh, kw)-ordered values."""
    n, h, w, c = images.shape
    rows = []
    for i in range(h - k + 1):
        for j in range(w - k + 1):
            patch = images[:, i:i + k, j:j + k, :]  # (N, k, k, C)
            rows.append(patch.transpose(0, 3, 1, 2).reshape(n, -1))
    return np.concatenate(rows)


def whitening_model(eps: float, negate: bool = True):
    return cnnlab.build_model({"input": [32, 32, 3], "layers": [
        {"PatchWhitening": {"patch_size": 2, "epsilon": eps, "negate": negate}},
        "Flatten", {"Dense": {"units": 2}}]})


@pytest.mark.parametrize("eps", [1e-8, 5e-4])
def test_whitening_stem_outputs_have_identity_covariance(eps):
    images = real_crops()
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).float()
    model = whitening_model(eps)
    assert data_init(model, x) == ["patch_whitening"]
    out = model.layers["patch_whitening"](x).detach().double().numpy()  # (N, 24, 31, 31)
    assert out.shape == (48, 24, 31, 31)
    channels = out.transpose(1, 0, 2, 3).reshape(24, -1)

    # The oracle: numpy's eigenvalues of the patch covariance, numpy's covariance of the output.
    patches = numpy_patches(images)
    lam = np.linalg.eigh(np.cov(patches, rowvar=False))[0][::-1]
    cov = np.cov(channels[:12])
    np.testing.assert_allclose(cov, np.diag(lam / (lam + eps)), atol=2e-3)
    np.testing.assert_allclose(channels[:12].mean(axis=1), 0, atol=1e-3)  # centred by the bias
    np.testing.assert_allclose(channels[12:], -channels[:12], atol=1e-5)  # the negated copy
    if eps == 1e-8:  # tiny epsilon: white
        np.testing.assert_allclose(cov, np.eye(12), atol=5e-3)


def test_whitening_kernel_is_frozen_and_counted_as_non_trainable():
    s = summary({"input": [32, 32, 3], "layers": [{"PatchWhitening": {}}, "Flatten", {"Dense": {"units": 2}}]})
    row = s.layers[0]
    # Keras' rules: a frozen kernel 2*2*3*24 is non-trainable, the 24 biases train.
    assert (row.output_shape, row.params, row.trainable, row.non_trainable) == ((31, 31, 24), 312, 24, 288)
    assert s.layers[2].params == (31 * 31 * 24 + 1) * 2
    model = whitening_model(5e-4)
    data_init(model, torch.from_numpy(real_crops(8).transpose(0, 3, 1, 2).copy()).float())
    stem = model.layers["patch_whitening"].conv
    kernel, bias = stem.weight.detach().clone(), stem.bias.detach().clone()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    x = torch.rand(8, 3, 32, 32)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1] * 4)).backward()
        opt.step()
    assert torch.equal(stem.weight, kernel)
    assert not torch.equal(stem.bias, bias)


def test_batchnorm_without_scale_counts_like_keras_and_keeps_gamma_one():
    layers = [{"Conv2D": {"filters": 8, "kernel_size": 3, "use_bias": False}},
              {"BatchNormalization": {"scale": False, "momentum": 0.6, "epsilon": 1e-12}},
              "Flatten", {"Dense": {"units": 3}}]
    s = summary({"input": [12, 12, 3], "layers": layers})
    bn = s.layers[1]
    # Keras BatchNormalization(scale=False): beta (C, trainable) + moving mean/var (2C).
    assert (bn.params, bn.trainable, bn.non_trainable) == (3 * 8, 8, 16)
    model = cnnlab.build_model({"input": [12, 12, 3], "layers": layers})
    assert "batch_normalization.weight" not in model.state_dict()
    norm = model.layers["batch_normalization"]
    assert "weight" not in dict(norm.named_parameters())  # a constant, not something to train
    assert sum(t.numel() for t in model.state_dict().values() if t.dtype.is_floating_point) == s.total_params
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.rand(16, 3, 12, 12)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), torch.arange(16) % 3).backward()
        opt.step()
    model.eval()
    conv, norm = model.layers["conv2d"], model.layers["batch_normalization"]
    h = conv(x)
    by_hand = (h - norm.running_mean.view(1, -1, 1, 1)) / torch.sqrt(norm.running_var.view(1, -1, 1, 1) + 1e-12)
    by_hand = by_hand + norm.bias.view(1, -1, 1, 1)  # gamma is 1: no scale at all
    assert torch.equal(norm.weight, torch.ones(8))  # still 1 after the steps
    torch.testing.assert_close(norm(h), by_hand, rtol=1e-5, atol=1e-5)
    assert norm.momentum == pytest.approx(0.4)  # Keras' 0.6 weighs the old average


def test_dirac_kernels_pass_the_input_through():
    model = cnnlab.build_model({"input": [9, 9, 4], "layers": [
        {"Conv2D": {"filters": 6, "kernel_size": 3, "padding": "same", "use_bias": False,
                    "kernel_initializer": "dirac"}}, "Flatten", {"Dense": {"units": 2}}]})
    x = torch.randn(2, 4, 9, 9)
    y = model.layers["conv2d"](x)
    torch.testing.assert_close(y[:, :4], x)  # the first in-channels copy their input
    assert y[:, 4:].abs().sum() > 0  # the other two keep torch's random start


def test_rescaling_multiplies_the_logits():
    model = cnnlab.build_model({"input": [4, 4, 1], "layers": [
        "Flatten", {"Dense": {"units": 3, "use_bias": False}}, {"Rescaling": {"scale": 0.25, "offset": 1.0}},
        {"Activation": {"activation": "softmax"}}]})
    x = torch.randn(5, 1, 4, 4)
    torch.testing.assert_close(model(x), x.flatten(1) @ model.layers["dense"].linear.weight.T * 0.25 + 1.0)
    assert model.output_activation == "softmax"


def test_airbench_preset_shapes_and_counts():
    s = summary("airbench")
    assert s.layers[0].output_shape == (31, 31, 24)
    assert [r.output_shape for r in s.layers if r.type == "MaxPooling2D"] == [(15, 15, 64), (7, 7, 256),
                                                                               (3, 3, 256), (1, 1, 256)]
    convs = [r.params for r in s.layers if r.type == "Conv2D"]
    assert convs == [3 * 3 * 24 * 64, 3 * 3 * 64 * 64, 3 * 3 * 64 * 256] + [3 * 3 * 256 * 256] * 3
    bns = [r for r in s.layers if r.type == "BatchNormalization"]
    assert sum(r.trainable for r in bns) == 64 * 2 + 256 * 4  # only the betas learn
    assert s.non_trainable_params == 2 * 2 * 3 * 24 + 2 * (64 * 2 + 256 * 4)
    assert s.layers[-3].params == 256 * 10


def test_airbench_small_is_airbench_at_half_the_width():
    s = summary("airbench_small")
    assert [r.output_shape for r in s.layers if r.type == "MaxPooling2D"] == [(15, 15, 32), (7, 7, 128),
                                                                               (3, 3, 128), (1, 1, 128)]
    convs = [r.params for r in s.layers if r.type == "Conv2D"]
    assert convs == [3 * 3 * 24 * 32, 3 * 3 * 32 * 32, 3 * 3 * 32 * 128] + [3 * 3 * 128 * 128] * 3
    assert s.non_trainable_params == 2 * 2 * 3 * 24 + 2 * (32 * 2 + 128 * 4)
    # multiply-adds per 32x32 image, by hand: each conv's output pixels x 3*3*Cin*Cout, plus the stem
    macs = (31 * 31 * 2 * 2 * 3 * 24 + 31 * 31 * 9 * 24 * 32 + 15 * 15 * 9 * 32 * 32 + 15 * 15 * 9 * 32 * 128
            + 7 * 7 * 9 * 128 * 128 * 2 + 3 * 3 * 9 * 128 * 128 + 128 * 10)
    full = summary("airbench")
    assert s.total_macs == macs and 3.4 < full.total_macs / s.total_macs < 3.7
    assert [r.type for r in s.layers] == [r.type for r in full.layers]


def test_airbench_medium_is_airbench_at_three_quarters_of_the_width():
    s = summary("airbench_medium")
    assert [r.output_shape for r in s.layers if r.type == "MaxPooling2D"] == [(15, 15, 48), (7, 7, 192),
                                                                               (3, 3, 192), (1, 1, 192)]
    convs = [r.params for r in s.layers if r.type == "Conv2D"]
    assert convs == [3 * 3 * 24 * 48, 3 * 3 * 48 * 48, 3 * 3 * 48 * 192] + [3 * 3 * 192 * 192] * 3
    assert s.non_trainable_params == 2 * 2 * 3 * 24 + 2 * (48 * 2 + 192 * 4)
    macs = (31 * 31 * 2 * 2 * 3 * 24 + 31 * 31 * 9 * 24 * 48 + 15 * 15 * 9 * 48 * 48 + 15 * 15 * 9 * 48 * 192
            + 7 * 7 * 9 * 192 * 192 * 2 + 3 * 3 * 9 * 192 * 192 + 192 * 10)
    full = summary("airbench")
    assert s.total_macs == macs == 69_070_368 and 0.58 < s.total_macs / full.total_macs < 0.59
    assert [r.type for r in s.layers] == [r.type for r in full.layers]
