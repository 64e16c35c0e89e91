"""Test-time augmentation averages the views: checked against views made by hand in numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cnnlab
from cnnlab.eval.infer import batch_probabilities
from cnnlab.eval.tta import shift, tta_mode


@pytest.fixture(scope="module")
def model():
    return cnnlab.build_model({"input": [12, 12, 3], "layers": [
        {"Conv2D": {"filters": 4, "kernel_size": 3}}, "Flatten",
        {"Dense": {"units": 5, "activation": "softmax"}}]}, seed=0).eval()


def softmax_of(model, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(np.ascontiguousarray(images))), 1).numpy()


def test_flip_translate_is_the_weighted_mean_of_six_views(model):
    x = np.random.default_rng(0).random((3, 3, 12, 12), dtype=np.float32)
    mirror = x[..., ::-1]
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    down_right = padded[..., 0:12, 0:12]  # content moved one pixel down and right
    up_left = padded[..., 2:14, 2:14]
    by_hand = (0.25 * softmax_of(model, x) + 0.25 * softmax_of(model, mirror)
               + 0.125 * sum(softmax_of(model, v) + softmax_of(model, v[..., ::-1]) for v in (down_right, up_left)))
    got = batch_probabilities(model, torch.from_numpy(x), "flip+translate").numpy()
    np.testing.assert_allclose(got, by_hand, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.sum(1), 1, atol=1e-5)
    flip = batch_probabilities(model, torch.from_numpy(x), True).numpy()
    np.testing.assert_allclose(flip, (softmax_of(model, x) + softmax_of(model, mirror)) / 2, rtol=1e-5, atol=1e-6)
    plain = batch_probabilities(model, torch.from_numpy(x), False).numpy()
    np.testing.assert_allclose(plain, softmax_of(model, x), rtol=1e-5, atol=1e-6)


def test_shift_moves_content_and_reflects_the_border():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    y = shift(x, 1, 1)
    assert torch.equal(y[0, 0, 1:, 1:], x[0, 0, :3, :3])
    assert y[0, 0, 0, 1] == x[0, 0, 1, 0]  # the new top row is the reflection of row 1


def test_tta_modes():
    assert [tta_mode(v) for v in (False, None, True, "flip", "flip+translate", "none")] == [
        "none", "none", "flip", "flip", "flip+translate", "none"]
    with pytest.raises(ValueError, match="tta must be one of"):
        tta_mode("rotate")
