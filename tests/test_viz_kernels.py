"""Kernels on a photo: the maps are torch's conv2d, convolution is the flipped kernel, files load."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import signal

from cnnlab.errors import CnnlabError
from cnnlab.viz.kernels import (DEFAULT_KERNELS, KERNELS, convolve, cross_correlate, get_kernels,
                                load_kernel_file, output_size, prepare_image, to_gray)
from cnnlab.viz.kernels_figure import plot_kernels
from imagegen import draw


@pytest.fixture(scope="module")
def gray():
    """A real grey picture with odd height and even width (21 x 24), from the test images."""
    return to_gray(draw("cross", (21, 24), np.random.default_rng(3)))


def torch_conv(gray, kernel, **kw):
    x = torch.from_numpy(gray)[None, None]
    w = torch.tensor(kernel.weights, dtype=torch.float32)[None, None]
    return F.conv2d(x, w, **kw)[0, 0]


# Output sizes of a 3x3 kernel on the 21 x 24 picture, worked out by hand from
# floor((n + 2 * padding - 3) / stride) + 1, as {(stride, padding): (rows, columns)}.
SHAPES = {
    (1, 0): (19, 22), (2, 0): (10, 11), (3, 0): (7, 8),    # n - 3 = 18 | 21
    (1, 1): (21, 24), (2, 1): (11, 12), (3, 1): (7, 8),    # n - 1 = 20 | 23
    (1, 2): (23, 26), (2, 2): (12, 13), (3, 2): (8, 9),    # n + 1 = 22 | 25
}


@pytest.mark.parametrize("name", list(KERNELS))
def test_every_builtin_kernel_matches_scipy_with_padding_and_stride(gray, name):
    """scipy's correlate2d on the zero-padded picture, every stride-th value in each direction."""
    k = KERNELS[name]
    assert k.weights.shape == (3, 3)
    for (stride, padding), shape in SHAPES.items():
        ours = cross_correlate(gray, k, stride, padding).numpy()
        padded = np.pad(gray.astype(np.float64), padding)
        expected = signal.correlate2d(padded, k.weights, mode="valid")[::stride, ::stride]
        assert ours.shape == expected.shape == shape
        assert np.allclose(ours, expected, atol=1e-5)
        assert output_size(21, 3, stride, padding, padding) == shape[0]
    assert np.allclose(cross_correlate(gray, k, 1, "valid").numpy(),
                       signal.correlate2d(gray, k.weights, mode="valid"), atol=1e-5)
    same = cross_correlate(gray, k, 1, "same").numpy()
    assert same.shape == (21, 24)  # "same" at stride 1 keeps the size
    assert np.allclose(same, signal.correlate2d(gray, k.weights, mode="same", boundary="fill"), atol=1e-5)


def test_same_padding_with_stride_follows_keras(gray):
    """Keras 'same' gives ceil(n / s) outputs; the odd pad pixel goes to the bottom/right.

    So with stride 2 an odd axis samples the stride-1 map at 0, 2, 4... and an even axis
    at 1, 3, 5... (21 rows are odd, 24 columns even).
    """
    k = KERNELS["sobel-x"]
    full = cross_correlate(gray, k, 1, "same")
    half = cross_correlate(gray, k, 2, "same")
    assert half.shape == (11, 12)
    assert torch.allclose(half, full[0::2, 1::2])


def test_correlation_and_convolution_match_scipy(gray):
    for k in KERNELS.values():
        corr = cross_correlate(gray, k).numpy()
        conv = convolve(gray, k).numpy()
        assert np.allclose(corr, signal.correlate2d(gray, k.weights, mode="valid"), atol=1e-5)
        assert np.allclose(conv, signal.convolve2d(gray, k.weights, mode="valid"), atol=1e-5)
        assert np.allclose(corr, conv, atol=1e-6) == k.symmetric
    sx = KERNELS["sobel-x"]
    assert np.allclose(convolve(gray, sx), -cross_correlate(gray, sx), atol=1e-6)  # the flip reverses the sign


def test_kernels_do_what_their_names_say():
    step = np.zeros((5, 6), np.float32)
    step[:, 3:] = 1.0  # dark left half, bright right half
    sx = cross_correlate(step, KERNELS["sobel-x"]).numpy()  # columns centred on 1..4
    assert np.allclose(sx[:, [0, 3]], 0) and np.allclose(sx[:, [1, 2]], 4)  # brighter to the right: +4
    assert np.allclose(cross_correlate(step, KERNELS["sobel-y"]), 0)  # no horizontal edge
    flat = np.full((6, 6), 0.4, np.float32)
    for name in ("box-blur", "gaussian", "sharpen", "identity", "emboss"):
        assert np.allclose(cross_correlate(flat, KERNELS[name]), 0.4, atol=1e-6)  # sum 1 keeps brightness
    for name in ("edge", "outline", "sobel-x"):
        assert np.allclose(cross_correlate(flat, KERNELS[name]), 0, atol=1e-6)  # sum 0: flat -> 0


def test_kernel_files_yaml_and_json(tmp_path):
    y = tmp_path / "mine.yaml"
    y.write_text("my-edge: [[1, 0, -1], [1, 0, -1], [1, 0, -1]]\n"
                 "blur-5: {matrix: [[1,1,1,1,1],[1,1,1,1,1],[1,1,1,1,1],[1,1,1,1,1],[1,1,1,1,1]], scale: 1/25}\n")
    edge, blur = load_kernel_file(y)
    assert edge.name == "my-edge" and edge.weights.tolist() == [[1, 0, -1]] * 3
    assert blur.shape == (5, 5) and blur.scale_text() == "1/25" and np.isclose(blur.weights.sum(), 1)
    j = tmp_path / "diag.json"
    j.write_text(json.dumps([[2, 0], [0, -2]]))
    (diag,) = load_kernel_file(j)
    assert diag.name == "diag" and not diag.symmetric
    ks = get_kernels(f"sobel-x,{y},{j}")
    assert [k.name for k in ks] == ["sobel-x", "my-edge", "blur-5", "diag"]
    gray = np.random.default_rng(0).random((12, 10)).astype(np.float32)
    assert torch.equal(cross_correlate(gray, blur, 1, "same"), torch_conv(gray, blur, padding="same"))


@pytest.mark.parametrize("text, message", [
    ("[[1, 2], [3]]", "rows have different lengths"),
    ("[[1, x]]", "'x' is not a finite number"),
    ("k: {matrix: [[1]], scale: abc}", "scale must be a number or a fraction"),
    ("k: {numbers: [[1]]}", "'matrix'"),
    ("[[1, 2", "not valid YAML or JSON at line"),
    ("42", "expected a matrix or a mapping"),
])
def test_bad_kernel_files_name_the_file(tmp_path, text, message):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(CnnlabError, match="bad.yaml") as e:
        load_kernel_file(p)
    assert message in str(e.value)


def test_kernel_name_errors(tmp_path):
    with pytest.raises(CnnlabError, match="did you mean 'sobel-x'"):
        get_kernels("sobelx")
    with pytest.raises(CnnlabError, match="given twice"):
        get_kernels("edge,edge")
    with pytest.raises(CnnlabError, match="no such kernel file"):
        get_kernels(str(tmp_path / "missing.yaml"))
    with pytest.raises(CnnlabError, match="larger than the padded image"):
        cross_correlate(np.zeros((2, 2), np.float32), KERNELS["edge"])
    with pytest.raises(CnnlabError, match="padding must be"):
        cross_correlate(np.zeros((5, 5), np.float32), KERNELS["edge"], 1, "full")
    with pytest.raises(CnnlabError, match="stride"):
        cross_correlate(np.zeros((5, 5), np.float32), KERNELS["edge"], 0)


def test_prepare_image_keeps_aspect_and_reads_files(tmp_path):
    rgb = draw("square", (60, 90), np.random.default_rng(1))
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    assert prepare_image(tmp_path / "photo.png", size=45).shape == (30, 45, 3)
    assert prepare_image(rgb, size=None).shape == (60, 90, 3)
    assert prepare_image(None, size=64).shape == (43, 64, 3)  # scikit-learn's 427 x 640 photo


def test_plot_kernels_shows_the_computed_maps(tmp_path):
    rgb = draw("cross", (40, 50), np.random.default_rng(2))
    out = tmp_path / "k.png"
    fig = plot_kernels(rgb, "sobel-x,box-blur", stride=2, padding="same", size=None, path=out)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 800 and im.height > 600
    gray = to_gray(rgb)
    shown = {ax.get_title(): ax.get_images()[0].get_array() for ax in fig.axes if ax.get_images()}
    assert np.allclose(shown["sobel-x → 20×25"], cross_correlate(gray, KERNELS["sobel-x"], 2, "same"))
    assert np.allclose(shown["box-blur → 20×25"], cross_correlate(gray, KERNELS["box-blur"], 2, "same"))
    # The last row: sobel-x is asymmetric, so cross-correlation and convolution are shown side by side.
    corr = next(v for t, v in shown.items() if t.startswith("cross-correlation"))
    conv = next(v for t, v in shown.items() if t.startswith("convolution"))
    assert np.allclose(conv, -corr, atol=1e-6)
    assert set(DEFAULT_KERNELS) <= set(KERNELS)
