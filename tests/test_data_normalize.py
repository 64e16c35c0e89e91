"""Mean/std measured on the training split, and class weights for imbalanced data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data.loader import make_loader
from cnnlab.data.normalize import Normalization, class_weights, compute_mean_std


def two_colours(tmp_path):
    items = []
    for i, colour in enumerate([(0, 128, 255), (255, 128, 0)]):
        p = tmp_path / f"{i}.png"
        Image.fromarray(np.full((6, 6, 3), colour, np.uint8)).save(p)
        items.append((str(p), i))
    return items


def test_mean_std_from_items_and_from_a_loader_agree(tmp_path):
    items = two_colours(tmp_path)
    norm = compute_mean_std(items, size=(4, 4), cache_dir=tmp_path / "c")
    assert norm.mean == pytest.approx((0.5, 128 / 255, 0.5), abs=1e-6)
    assert norm.std == pytest.approx((0.5, 1e-3, 0.5), abs=1e-6)  # a constant channel: floored, no 0
    loader = make_loader(items, size=(4, 4), cache_dir=tmp_path / "c")
    assert compute_mean_std(loader) == norm
    x = norm.apply(next(iter(loader))[0])
    assert torch.allclose(x[:, 0].mean(), torch.tensor(0.0), atol=1e-5)
    assert torch.allclose(x[:, 0].std(unbiased=False), torch.tensor(1.0), atol=1e-5)
    assert Normalization.from_dict(norm.to_dict()) == norm


def test_mean_std_subset_and_errors(tmp_path):
    items = two_colours(tmp_path)
    one = compute_mean_std(items, size=4, cache_dir=False, max_images=1)
    assert one.mean == pytest.approx((0.0, 128 / 255, 1.0), abs=1e-6)  # the first image only
    with pytest.raises(ValueError, match="size"):
        compute_mean_std(items)


def test_class_weights_inverse_frequency_mean_one():
    w = class_weights([0, 0, 0, 1], 2)
    torch.testing.assert_close(w, torch.tensor([0.5, 1.5]))
    w = class_weights(torch.tensor([0, 0, 2, 2, 2, 2]), 3)
    torch.testing.assert_close(w, torch.tensor([4 / 3, 0.0, 2 / 3]))  # class 1 absent: weight 0
    # With these weights each class contributes equally to the loss.
    labels = torch.tensor([0] * 30 + [1] * 10)
    w = class_weights(labels, 2)
    assert w[labels][labels == 0].sum() == pytest.approx(w[labels][labels == 1].sum())
