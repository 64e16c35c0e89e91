"""Batch augmentation: exact geometry for known matrices, every fill mode, Keras options,
reproducibility, and the option parser."""

from __future__ import annotations

import math

import pytest
import torch

from cnnlab.data.augment import AugmentConfig, Augmenter, parse_augment, warp
from cnnlab.errors import CnnlabError


def batch(n=2, h=12, w=16, seed=0):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def matrix(a, b, c, d, e, f, n=2):
    return torch.tensor([[a, b, c], [d, e, f], [0, 0, 1]], dtype=torch.float64).repeat(n, 1, 1)


def shift_right(x, k, mode, cval=0.0):
    return warp(x, matrix(1, 0, -k, 0, 1, 0, len(x)).float(), mode, cval)


def test_integer_shift_moves_pixels_exactly_and_each_fill_mode_fills_as_keras():
    x = batch()
    for mode in ("nearest", "constant", "reflect", "wrap"):
        out = shift_right(x, 5, mode, cval=0.25)
        torch.testing.assert_close(out[..., 5:], x[..., :-5], atol=1e-5, rtol=0)
    torch.testing.assert_close(shift_right(x, 5, "nearest")[..., :5], x[..., :1].expand(-1, -1, -1, 5),
                               atol=1e-5, rtol=0)  # aaaa|abcd
    assert torch.allclose(shift_right(x, 5, "constant", 0.25)[..., :5], torch.tensor(0.25))
    assert torch.allclose(shift_right(x, 5, "constant", 255)[..., :5], torch.tensor(1.0))  # pixel units
    torch.testing.assert_close(shift_right(x, 5, "reflect")[..., :5], x[..., :5].flip(-1),
                               atol=1e-5, rtol=0)  # dcba|abcd
    torch.testing.assert_close(shift_right(x, 5, "wrap"), torch.roll(x, 5, -1), atol=1e-5, rtol=0)


def test_wrap_reads_across_the_seam_for_half_pixel_shifts():
    x = batch(1, 4, 6)
    out = shift_right(x, 0.5, "wrap")
    torch.testing.assert_close(out, (x + torch.roll(x, 1, -1)) / 2, atol=1e-5, rtol=0)


def test_rotation_uses_pixel_coordinates_on_non_square_images():
    x = batch(1, 16, 32)
    out = warp(x, matrix(0, -1, 0, 1, 0, 0, 1).float(), "constant")  # 90 degrees
    centre = x[..., 8:24]
    rotated = [torch.rot90(centre, k, dims=(-2, -1)) for k in (1, -1)]
    assert any(torch.allclose(out[..., 8:24], r, atol=1e-5) for r in rotated)
    assert torch.allclose(out[..., :8], torch.tensor(0.0))  # the square's sides: outside -> cval
    half_turn = warp(x, matrix(-1, 0, 0, 0, -1, 0, 1).float(), "nearest")
    torch.testing.assert_close(half_turn, x.flip(-1).flip(-2), atol=1e-5, rtol=0)


def test_none_is_identity_and_flips_are_exact():
    x = batch(64, 8, 8)
    assert Augmenter("none")(x, torch.Generator()) is x
    g = torch.Generator().manual_seed(0)
    out = Augmenter("flip")(x, g)
    flipped = [torch.allclose(o, xi.flip(-1), atol=1e-5) for o, xi in zip(out, x)]
    same = [torch.allclose(o, xi, atol=1e-5) for o, xi in zip(out, x)]
    assert all(f or s for f, s in zip(flipped, same)) and 16 < sum(flipped) < 48
    out = Augmenter("vflip")(x, torch.Generator().manual_seed(1))
    assert all(torch.allclose(o, xi, atol=1e-5) or torch.allclose(o, xi.flip(-2), atol=1e-5)
               for o, xi in zip(out, x))


def test_same_generator_state_same_batch_and_shape_dtype_kept():
    x = batch(4).double()
    aug = Augmenter("strong,crop,vflip")
    a = aug(x, torch.Generator().manual_seed(7))
    b = aug(x, torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and a.shape == x.shape and a.dtype == torch.float64
    g = torch.Generator().manual_seed(7)
    aug(x, g)
    assert not torch.equal(aug(x, g), a)  # the generator moved on
    assert a.min() >= 0 and a.max() <= 1


def test_brightness_multiplies():
    x = batch() * 0.4
    out = Augmenter({"brightness_range": [2, 2]})(x, torch.Generator())
    torch.testing.assert_close(out, x * 2)


def test_zoom_and_random_resized_crop_magnify():
    ramp = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(8, 3, 16, 64).contiguous()
    zoomed = Augmenter({"zoom_range": [0.5, 0.5]})(ramp, torch.Generator())
    slope = (zoomed[..., 40] - zoomed[..., 24]) / 16
    assert torch.allclose(slope, torch.tensor(0.5 / 63), atol=1e-4)  # half the ramp over the width
    cropped = Augmenter({"random_resized_crop": [0.25, 0.25]})(ramp, torch.Generator().manual_seed(0))
    slope = (cropped[..., 40] - cropped[..., 24]) / 16 * 63
    assert ((slope > 0.35) & (slope < 0.65)).all()  # about half the image's width, any aspect


def test_shear_keeps_the_centre_row_and_bends_the_others():
    x = batch(1, 15, 15)
    out = Augmenter({"shear_range": 30})(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out[..., 7, :], x[..., 7, :], atol=1e-5, rtol=0)
    assert not torch.allclose(out[..., 0, :], x[..., 0, :], atol=1e-3)


def test_shift_and_rotation_ranges_are_respected():
    cfg = parse_augment("shift=3,rotation=10")
    m = Augmenter(cfg).matrices(_rand(1000), 20, 40)
    assert m[:, 0, 2].abs().max() <= 3 + 1e-6 and m[:, 1, 2].abs().max() <= 3 + 1e-6  # pixels (>= 1)
    angles = torch.rad2deg(torch.atan2(m[:, 1, 0], m[:, 0, 0]))
    assert angles.abs().max() <= 10 + 1e-6 and angles.abs().max() > 9
    m = Augmenter(parse_augment("shift=0.1")).matrices(_rand(1000), 20, 40)
    assert m[:, 0, 2].abs().max() <= 4 + 1e-6 and m[:, 0, 2].abs().max() > 3.5  # 10% of 40


def _rand(n):
    from cnnlab.data.augment import _Random

    return _Random(torch.Generator().manual_seed(0), n)


def test_random_erasing_replaces_one_rectangle():
    x = torch.full((16, 3, 20, 20), 0.5)
    out = Augmenter({"random_erasing": 1.0})(x, torch.Generator().manual_seed(0))
    for o in out:
        changed = (o != 0.5).any(0)
        rows, cols = changed.any(1).nonzero(), changed.any(0).nonzero()
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert changed.sum() == box  # a filled rectangle
        assert 0.015 * 400 <= box <= 0.34 * 400
    untouched = Augmenter({"random_erasing": 0.0001})(x, torch.Generator().manual_seed(0))
    assert torch.equal(untouched, x)


def test_parse_presets_overrides_aliases_and_dicts():
    assert parse_augment(None) == parse_augment("none") == AugmentConfig()
    std = parse_augment("standard")
    assert std.rotation_range == 20 and std.horizontal_flip and std.zoom_range == (0.8, 1.2)
    cfg = parse_augment("standard, rotation=15, fill=reflect, brightness=0.8:1.2, shift=0.05, crop, erasing")
    assert (cfg.rotation_range, cfg.fill_mode, cfg.brightness_range) == (15, "reflect", (0.8, 1.2))
    assert cfg.width_shift_range == cfg.height_shift_range == 0.05 and cfg.shear_range == 10
    assert cfg.random_resized_crop == (0.5, 1.0) and cfg.random_erasing == 0.5
    assert parse_augment("flip,zoom=0.1").zoom_range == pytest.approx((0.9, 1.1))
    assert parse_augment("flip=false,vflip").vertical_flip and not parse_augment("flip=false").horizontal_flip
    d = parse_augment({"preset": "light", "rotation_range": 5, "horizontal_flip": False, "zoom_range": [0.7, 1]})
    assert (d.rotation_range, d.horizontal_flip, d.zoom_range, d.width_shift_range) == (5, False, (0.7, 1.0), 0.1)
    assert parse_augment(cfg) is cfg
    assert "rotation_range=15" in cfg.describe() and cfg.to_dict()["brightness_range"] == [0.8, 1.2]


@pytest.mark.parametrize("text,match", [
    ("flip,colour=2", r"unknown augmentation option 'colour'; presets \(first\): none, light, standard, strong, "
                      r"cifar, photo; options: .*rotation_range"),
    ("standart", r"unknown augmentation option 'standart'; did you mean 'standard'\?"),
    ("rotation=lots", "rotation got 'lots', which is not a number"),
    ("fill=mirror", "fill_mode must be one of nearest, constant, reflect, wrap"),
    ("flip,standard", "preset 'standard' must come first"),
    ("brightness=1.2:0.8", "low:high"),
    ("erasing=2", "probability"),
    ("rotation=-5", "negative"),
    ("crop=0:1", "area fraction"),
])
def test_bad_options_are_one_clear_sentence(text, match):
    with pytest.raises(CnnlabError, match=match) as e:
        parse_augment(text)
    assert "\n" not in str(e.value)


def test_augmenter_rejects_a_single_image():
    with pytest.raises(ValueError, match="batch"):
        Augmenter("flip")(torch.rand(3, 8, 8), torch.Generator())


def test_angle_draws_cover_the_range_symmetrically():
    m = Augmenter(parse_augment("rotation=40")).matrices(_rand(4000), 8, 8)
    angles = torch.atan2(m[:, 1, 0], m[:, 0, 0])
    assert abs(float(angles.mean())) < math.radians(2)


def test_uint8_and_half_precision_batches():
    pixels = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    out = Augmenter("flip")(pixels, torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32 and out.max() <= 1
    half = torch.rand(2, 3, 8, 8).half()
    out = Augmenter("strong,crop")(half, torch.Generator().manual_seed(0))
    assert out.dtype == torch.float16 and out.shape == half.shape and torch.isfinite(out).all()
