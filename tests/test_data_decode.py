"""Decoding: every format and mode to RGB or grayscale, EXIF, resize policies, bad files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import badimages as bi
from cnnlab.data import decode
from cnnlab.data.decode import BadImage, load_image
from cnnlab.errors import DataError

RED, BLUE, GREEN, WHITE = (220, 30, 30), (30, 30, 220), (30, 200, 30), (255, 255, 255)


def close(a, b, tol=6):
    return np.abs(np.asarray(a, int) - np.asarray(b, int)).max() <= tol


@pytest.mark.parametrize("fmt", list(bi.FORMATS))
def test_every_format_decodes_to_the_picture(tmp_path, fmt):
    path = bi.write_formats(tmp_path)[fmt]
    arr = load_image(path)
    assert arr.shape == (24, 32, 3) and arr.dtype == np.uint8
    if fmt in bi.LOSSLESS or fmt == "gif":  # GIF: 3 colours fit its palette exactly
        assert np.array_equal(arr, bi.reference())
    else:
        assert np.abs(arr.astype(int) - bi.reference()).mean() < 8  # chroma blur at the edges


@pytest.mark.parametrize("name", ["gray16_png", "gray16_tiff", "int32_tiff", "float_tiff"])
def test_high_bit_depth_grayscale_keeps_its_full_range(tmp_path, name):
    arr = load_image(bi.write_odd(tmp_path, [name])[name])
    assert arr.shape == (24, 32, 3)
    assert arr[0, 0, 0] == 0 and arr[-1, -1, 0] == 255  # not clipped to the bottom 8 bits
    assert (np.diff(arr[..., 0].ravel().astype(int)) >= 0).all()  # still a ramp
    assert (arr[..., 0] == arr[..., 2]).all()


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path):
    arr = load_image(bi.write_odd(tmp_path, ["cmyk_jpeg"])["cmyk_jpeg"])
    assert close(arr[12, 4], RED, 12) and close(arr[12, 28], BLUE, 12) and close(arr[0, 0], GREEN, 12)


@pytest.mark.parametrize("name", ["palette_transparent", "rgba_png", "la_png"])
def test_transparent_pixels_are_composited_on_white(tmp_path, name):
    arr = load_image(bi.write_odd(tmp_path, [name])[name])
    assert (arr[:, 16:] == 255).all()  # the transparent right half
    if name != "la_png":
        assert close(arr[12, 4], RED, 2)


def test_animated_gif_gives_its_first_frame(tmp_path):
    arr = load_image(bi.write_odd(tmp_path, ["animated_gif"])["animated_gif"])
    assert np.array_equal(arr, bi.reference())


def test_exif_orientation_is_applied(tmp_path):
    path = bi.write_odd(tmp_path, ["exif_rotated_jpeg"])["exif_rotated_jpeg"]
    assert Image.open(path).size == (32, 24)  # stored landscape
    arr = load_image(path)
    assert arr.shape == (32, 24, 3)  # shown portrait: rotated 90 degrees clockwise
    assert close(arr[2, 2], RED, 10)  # the left (red) half is now at the top...
    assert close(arr[30, 2], BLUE, 10)  # ...the blue half at the bottom
    assert close(arr[16, 23], GREEN, 10)  # ...and the green top bar on the right
    # With a target size the draft-mode path must rotate the same way.
    assert close(load_image(path, (16, 12))[1, 1], RED, 12)


@pytest.mark.parametrize("name,shape", [("one_by_one", (1, 1)), ("thin", (1, 300)), ("bilevel_png", (24, 32))])
def test_tiny_thin_and_bilevel_images(tmp_path, name, shape):
    path = bi.write_odd(tmp_path, [name])[name]
    assert load_image(path).shape == shape + (3,)
    out = load_image(path, (16, 16))
    assert out.shape == (16, 16, 3)
    assert out.std() > 0 or name == "one_by_one"


def test_grayscale_in_rgb_set_and_rgb_for_grayscale_models(tmp_path):
    files = bi.write_odd(tmp_path, ["grayscale_jpeg"]) | bi.write_formats(tmp_path)
    gray = load_image(files["grayscale_jpeg"], (24, 32), channels=3)
    assert gray.shape == (24, 32, 3) and (gray[..., 0] == gray[..., 1]).all()
    one = load_image(files["png"], (24, 32), channels=1)
    assert one.shape == (24, 32, 1)
    expected = np.asarray(Image.fromarray(bi.reference()).convert("L"))
    assert close(one[..., 0], expected, 1)


def test_resize_policies(tmp_path):
    # A 64x32 (W x H) picture: left half black, right half white.
    arr = np.zeros((32, 64, 3), np.uint8)
    arr[:, 32:] = 255
    path = tmp_path / "wide.png"
    Image.fromarray(arr).save(path)
    stretch = load_image(path, (16, 16), policy="stretch")
    assert stretch[:, :7].max() == 0 and stretch[:, 9:].min() == 255  # halves squeezed
    crop = load_image(path, (16, 16), policy="crop")  # the centre 32x32: half and half again
    assert crop[:, :7].max() == 0 and crop[:, 9:].min() == 255
    big_crop = load_image(path, (32, 32), policy="crop")
    assert np.array_equal(big_crop, arr[:, 16:48])  # exactly the centre square
    box = load_image(path, (32, 32), policy="letterbox")  # fit 32x16, black bars top and bottom
    assert box[:8].max() == 0 and box[24:].max() == 0
    assert box[9:23, 17:].min() == 255
    with pytest.raises(DataError, match="letterbox"):
        load_image(path, (8, 8), policy="squash")


def test_large_jpeg_uses_draft_mode_and_matches_full_decode(tmp_path, monkeypatch):
    path = bi.large_jpeg(tmp_path / "photo.jpg", (375, 500))
    from PIL import JpegImagePlugin

    calls = []
    real = JpegImagePlugin.JpegImageFile.draft
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft",
                        lambda self, mode, size: calls.append(size) or real(self, mode, size))
    fast = load_image(path, (64, 64))
    assert calls == [(64, 64)]
    with Image.open(path) as im:
        im.draft("RGB", (64, 64))
        assert im.size == (125, 94)  # decoded at 1/4 scale, still >= 64 on both sides
    full = np.asarray(Image.open(path).convert("RGB").resize((64, 64), Image.Resampling.BILINEAR))
    assert np.abs(fast.astype(int) - full).mean() < 4


@pytest.mark.parametrize("name", list(bi.BAD))
def test_every_bad_file_kind_raises_badimage_with_a_reason(tmp_path, name):
    path = bi.write_bad(tmp_path, [name])[name]
    with pytest.raises(BadImage) as e:
        load_image(path, (32, 32))
    assert bi.BAD_REASONS[name] in e.value.reason
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_decompression_bomb_limit_is_set_deliberately():
    assert Image.MAX_IMAGE_PIXELS == decode.MAX_PIXELS == 64_000_000


def test_missing_file_is_a_bad_image(tmp_path):
    with pytest.raises(BadImage, match="cannot open"):
        load_image(tmp_path / "gone.jpg")
