"""The kernel lab's Python side: its arithmetic (cnnlab.viz.kernellab_math), the ipywidgets
lab and the page that the CLI writes (cnnlab.explain.kernellab).

Oracle: torch's conv2d with the padding worked out by hand (tests/kernelref.py), and sums
of products computed here with numpy. The browser test (test_kernel_lab_browser.py) checks
the page's JavaScript against the same kernelref.reference, so both are held to one oracle.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from kernelref import EDGE, SOBEL_X, reference


@pytest.fixture(scope="module")
def rgb():
    from cnnlab.viz.kernellab_math import lab_image

    return lab_image(size=64)


@pytest.mark.parametrize("stride,padding,mode", [(1, "valid", "grey"), (2, "same", "grey"), (3, "same", "rgb"),
                                                 (2, "valid", "rgb")])
def test_lab_compute_is_conv2d(rgb, stride, padding, mode):
    from cnnlab.viz.kernellab_math import lab_compute

    k = np.arange(25, dtype=np.float64).reshape(5, 5) / 10 - 1.2  # asymmetric: a flip would show
    got = lab_compute(rgb, k, stride, padding, mode)
    np.testing.assert_allclose(got, reference(rgb, k, stride, padding, mode), atol=1e-5)


def test_explain_pixel_adds_up_at_the_padded_corners(rgb):
    from cnnlab.viz.kernellab_math import explain_pixel, lab_compute

    h, w = rgb.shape[:2]
    assert (h, w) == (43, 64)  # the sample photo at 64 px
    out = lab_compute(rgb, SOBEL_X, 2, "same", "grey")
    assert out.shape == (1, 22, 32)
    # Height: 22 outputs need 21*2 + 3 - 43 = 2 zero rows, 1 above, 1 below.
    # Width: 32 outputs need 31*2 + 3 - 64 = 1 zero column, on the right.
    first = explain_pixel(rgb, SOBEL_X, 2, "same", "grey", 0, 0, 0)
    assert first["top_left"] == (-1, 0)
    assert np.all(first["patch"][0] == 0) and np.all(first["patch"][1:] > 0)
    last = explain_pixel(rgb, SOBEL_X, 2, "same", "grey", 0, 21, 31)
    assert last["top_left"] == (41, 62)
    assert np.all(last["patch"][2] == 0) and np.all(last["patch"][:, 2] == 0) and np.all(last["patch"][:2, :2] > 0)
    for e, (y, x) in [(first, (0, 0)), (last, (21, 31))]:
        assert e["sum"] == pytest.approx(float((e["patch"] * np.array(SOBEL_X)).sum()))
        assert e["sum"] == pytest.approx(float(out[0, y, x]), abs=1e-5)


@pytest.mark.parametrize("stride,padding,mode", [(1, "valid", "grey"), (2, "same", "grey"), (3, "same", "rgb")])
def test_explain_pixel_is_the_oracle_at_every_pixel(rgb, stride, padding, mode):
    """The patch x kernel sum that the lab shows for a pixel, for every pixel, is the oracle's value."""
    from cnnlab.viz.kernellab_math import explain_pixel

    k = np.arange(25, dtype=np.float64).reshape(5, 5) / 10 - 1.2  # asymmetric: a flip would show
    ref = reference(rgb, k, stride, padding, mode)
    C, H, W = ref.shape
    got = np.array([[[explain_pixel(rgb, k, stride, padding, mode, c, y, x)["sum"] for x in range(W)]
                     for y in range(H)] for c in range(C)])
    np.testing.assert_allclose(got, ref, atol=1e-5)


@pytest.mark.parametrize("text,value", [("2", 2.0), (" -0.5 ", -0.5), ("1e-2", 0.01), ("1/16", 0.0625),
                                        ("\u22123", -3.0), ("", None), ("abc", None), ("1/0", None),
                                        ("nan", None), ("inf", None), ("2..5", None)])
def test_parse_cell(text, value):
    from cnnlab.viz.kernellab_math import parse_cell

    assert parse_cell(text) == value


def test_viz_forwards_the_lab_without_importing_explain():
    """viz sits below explain: importing it loads no explain module, yet its lab names still work."""
    import subprocess
    import sys

    code = ("import sys, cnnlab.viz as viz\n"
            "assert not [m for m in sys.modules if m.startswith('cnnlab.explain')]\n"
            "import cnnlab.explain.kernellab as lab\n"
            "for n in ('kernel_lab', 'KernelLab', 'show_lab', 'write_lab'):\n"
            "    assert getattr(viz, n) is getattr(lab, n), n\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    import cnnlab.explain
    import cnnlab.viz

    assert cnnlab.explain.kernel_lab is cnnlab.viz.kernel_lab
    assert {"kernel_lab", "KernelLab", "show_lab", "write_lab", "lab_compute"} <= set(dir(cnnlab.viz))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        cnnlab.viz.nope  # noqa: B018


def test_widget_lab_follows_its_controls(rgb):
    import ipywidgets  # noqa: F401  (a dev dependency: missing, this fails, never skips)

    from cnnlab.viz import kernel_lab

    lab = kernel_lab(rgb, kernel="sobel-x", size=64)
    np.testing.assert_allclose(lab.output, reference(rgb, SOBEL_X, 1, "valid", "grey"), atol=1e-5)

    lab.cells[1][2].value = "5"  # typing into one cell of the grid recomputes
    edited = [[-1, 0, 1], [-2, 0, 5], [-1, 0, 1]]
    np.testing.assert_allclose(lab.output, reference(rgb, edited, 1, "valid", "grey"), atol=1e-5)

    lab.stride.value = 2
    lab.padding.value = "same"
    lab.mode.value = "rgb"
    ref = reference(rgb, edited, 2, "same", "rgb")
    np.testing.assert_allclose(lab.output, ref, atol=1e-5)
    assert lab.row.max == ref.shape[1] - 1 and lab.col.max == ref.shape[2] - 1
    lab.channel.value, lab.row.value, lab.col.value = 2, 5, 7
    assert lab.explain()["sum"] == pytest.approx(float(ref[2, 5, 7]), abs=1e-5)
    assert f"{ref[2, 5, 7]:.5f}" in lab.arithmetic.value

    good = lab.output.copy()
    lab.cells[0][0].value = "abc"  # flagged; the last good map stays
    assert lab.error and "row 1, column 1" in lab.error and "Fix the kernel" in lab.message.value
    np.testing.assert_array_equal(lab.output, good)
    lab.cells[0][0].value = ""
    assert lab.error
    lab.cells[0][0].value = "-1"
    assert lab.error is None

    lab.size.value = 5  # the preset at 5x5: sobel-x in the middle of zeros
    assert len(lab.cells) == 5
    np.testing.assert_allclose(lab.output, reference(rgb, np.pad(SOBEL_X, 1), 2, "same", "rgb"), atol=1e-5)
    lab.preset.value = "gaussian"  # a real 5x5 Gaussian, scale 1/256
    g = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]) / 256
    np.testing.assert_allclose(lab.output, reference(rgb, g, 2, "same", "rgb"), atol=1e-5)


def test_widget_lab_shows_a_figure_in_a_notebook(rgb, monkeypatch):
    import IPython.display
    import ipywidgets  # a dev dependency: missing, this fails, never skips

    from cnnlab.viz import kernel_lab

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, **kw: shown.append(obj))
    lab = kernel_lab(rgb, kernel="edge", size=64)
    lab._ipython_display_()
    from matplotlib.figure import Figure

    assert any(isinstance(o, Figure) for o in shown) and any(isinstance(o, ipywidgets.VBox) for o in shown)


def test_cli_interactive_writes_a_self_contained_page(tmp_path, capsys):
    from cnnlab.cli import main
    from cnnlab.viz.kernellab_math import LAB_SIDE, lab_image

    out = tmp_path / "lab.html"
    assert main(["viz", "kernels", "--interactive", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    html = out.read_text()
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", html), "the page must not load anything"
    cfg = json.loads(re.search(r'id="cnnlab-kernel-lab">(.*?)</script>', html, re.S).group(1))
    assert {p["name"] for p in cfg["presets"]} >= {"edge", "sobel-x", "sobel-y", "sharpen", "box-blur", "gaussian",
                                                   "emboss", "outline"}
    assert max(cfg["sample"]["w"], cfg["sample"]["h"]) == LAB_SIDE
    assert (cfg["sample"]["h"], cfg["sample"]["w"]) == lab_image().shape[:2]


@pytest.mark.parametrize("out,msg", [("lab.png", "name it .html"), ("nowhere/lab.html", "does not exist")])
def test_cli_interactive_bad_out(tmp_path, capsys, out, msg):
    from cnnlab.cli import main

    assert main(["viz", "kernels", "--interactive", "--out", str(tmp_path / out)]) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err
