"""The kernel lab in a real browser (Debian's chromium, driven by Playwright).

The page that `cnnlab viz kernels --interactive` writes and the "Kernel lab" tab of the
explainer are opened with the network cut off; any console error fails the test. The
oracle for every number the page shows is torch's conv2d, computed here on the same
pixels, with the padding worked out by hand (not with cnnlab's own helpers).
Skipped, saying why, where chromium is absent (.ci/run installs it with apt-get).
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from browsertools import browser  # noqa: F401 (a fixture; skips this module without chromium)
from kernelref import EDGE, SOBEL_X, reference

pytestmark = pytest.mark.browser


class Lab:
    """A page with the lab; console errors and outside requests are recorded (and refused)."""

    def __init__(self, browser, url: str):
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.errors: list[str] = []
        self.outside: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

        def route(r):
            if r.request.url.startswith(("file://", "data:")):
                r.continue_()
            else:
                self.outside.append(r.request.url)
                r.abort()

        self.page.route("**/*", route)
        self.page.goto(url)
        self.page.wait_for_selector("body[data-kl-ready='1']", timeout=20_000)

    def until(self, js: str, timeout_s: float = 20) -> None:
        """Wait for a JS condition (polled from here: the page's CSP forbids wait_for_function's eval)."""
        import time

        end = time.monotonic() + timeout_s
        while not self.page.evaluate(js):
            assert time.monotonic() < end, f"timed out waiting for {js}"
            self.page.wait_for_timeout(50)

    def runs(self) -> int:
        return int(self.page.get_attribute("body", "data-kl-runs") or 0)

    def cell(self, r: int, c: int):
        return self.page.locator(f"#kl-grid input[data-r='{r}'][data-c='{c}']")

    def set_kernel(self, rows) -> None:
        for r, row in enumerate(rows):
            for c, v in enumerate(row):
                self.cell(r, c).fill(str(v))

    def feature_map(self) -> np.ndarray:
        C, H, W, data = self.page.evaluate("[CX.KL.res.C, CX.KL.res.H, CX.KL.res.W, Array.from(CX.KL.res.data)]")
        return np.array(data).reshape(C, H, W)

    def shown(self) -> float:
        return float(self.page.get_attribute("#kl-readout [data-role='kl-value']", "data-value"))

    def hover(self, y: int, x: int, ch: int = 0) -> None:
        """Move the mouse over the middle of output pixel (y, x) of map `ch`."""
        H, W = self.page.evaluate("[CX.KL.res.H, CX.KL.res.W]")
        box = self.page.locator(f"#kl-maps canvas[data-ch='{ch}']").bounding_box()
        self.page.mouse.move(box["x"] + (x + 0.5) * box["width"] / W, box["y"] + (y + 0.5) * box["height"] / H)
        got = self.page.eval_on_selector("#kl-readout", "e => [+e.dataset.y, +e.dataset.x]")
        assert got == [y, x]

    def close(self) -> None:
        assert not self.errors, f"console errors: {self.errors}"
        assert not self.outside, f"the page tried to reach the network: {self.outside}"
        self.page.close()


@pytest.fixture(scope="module")
def lab_file(tmp_path_factory):
    from cnnlab.cli import main

    out = tmp_path_factory.mktemp("lab") / "lab.html"
    assert main(["viz", "kernels", "--interactive", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def sample_rgb():
    from cnnlab.viz.kernellab_math import lab_image

    return lab_image()


def test_lab_page_numbers_are_torch_conv2d(browser, lab_file, sample_rgb):
    lab = Lab(browser, lab_file.as_uri())
    # The page's photo is the sample photo, pixel for pixel.
    w, h = lab.page.evaluate("[CX.KL.photos.sample.w, CX.KL.photos.sample.h]")
    assert (h, w) == sample_rgb.shape[:2]
    page_rgb = np.array(lab.page.evaluate("Array.from(CX.KL.photos.sample.rgb)"), np.uint8).reshape(h, w, 3)
    assert np.array_equal(page_rgb, sample_rgb)

    # Default: edge, valid, stride 1, grey.
    ref = reference(sample_rgb, EDGE, 1, "valid", "grey")
    got = lab.feature_map()
    assert got.shape == ref.shape == (1, h - 2, w - 2)
    np.testing.assert_allclose(got, ref, atol=2e-5)

    # Sobel x, stride 2, same padding: the map, and the value shown when hovering a pixel.
    lab.page.click(".kl-preset[data-name='sobel-x']")
    lab.page.fill("#kl-stride", "2")
    lab.page.select_option("#kl-padding", "same")
    ref = reference(sample_rgb, SOBEL_X, 2, "same", "grey")
    got = lab.feature_map()
    assert got.shape == ref.shape == (1, math.ceil(h / 2), math.ceil(w / 2))
    np.testing.assert_allclose(got, ref, atol=2e-5)
    for y, x in [(10, 17), (0, 0), (ref.shape[1] - 1, ref.shape[2] - 1)]:  # corners touch the padding
        lab.hover(y, x)
        assert lab.shown() == pytest.approx(float(ref[0, y, x]), abs=2e-5)
        [total] = [float(v) for v in lab.page.eval_on_selector_all(
            "#kl-readout [data-role='kl-sum']", "els => els.map(e => e.dataset.value)")]
        products = [float(v) for v in lab.page.eval_on_selector_all(
            "#kl-readout [data-role='kl-product']", "els => els.map(e => e.dataset.value)")]
        assert len(products) == 9 and sum(products) == pytest.approx(total, abs=1e-5)

    # Per channel, a 5x5 Gaussian: three maps, each torch's conv2d of one channel.
    lab.page.select_option("#kl-size", "5")
    lab.page.click(".kl-preset[data-name='gaussian']")
    lab.page.select_option("#kl-mode", "rgb")
    g = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]) / 256
    ref = reference(sample_rgb, g, 2, "same", "rgb")
    got = lab.feature_map()
    assert got.shape == ref.shape and got.shape[0] == 3
    np.testing.assert_allclose(got, ref, atol=2e-5)
    lab.hover(20, 30, ch=1)
    assert lab.shown() == pytest.approx(float(ref[1, 20, 30]), abs=2e-5)
    lab.page.screenshot(path=str(lab_file.parent / "lab-rgb.png"), full_page=True)
    lab.close()


def test_editing_a_cell_changes_the_map_and_bad_entries_are_flagged(browser, lab_file, sample_rgb):
    lab = Lab(browser, lab_file.as_uri())
    lab.page.click(".kl-preset[data-name='sobel-x']")
    before = lab.feature_map()
    lab.hover(30, 40)
    shown_before = lab.shown()

    lab.cell(1, 2).fill("5")  # sobel-x with a 5 instead of the 2 on the right
    edited = [[-1, 0, 1], [-2, 0, 5], [-1, 0, 1]]
    after = lab.feature_map()
    assert not np.allclose(after, before)
    np.testing.assert_allclose(after, reference(sample_rgb, edited, 1, "valid", "grey"), atol=2e-5)
    lab.hover(30, 41)
    lab.hover(30, 40)
    assert lab.shown() != pytest.approx(shown_before, abs=1e-6)
    assert lab.shown() == pytest.approx(float(reference(sample_rgb, edited, 1, "valid", "grey")[0, 30, 40]), abs=2e-5)

    # Fractions are numbers too: 1/2 in a cell.
    lab.cell(0, 0).fill("1/2")
    edited[0][0] = 0.5
    np.testing.assert_allclose(lab.feature_map(), reference(sample_rgb, edited, 1, "valid", "grey"), atol=2e-5)
    good = lab.feature_map()

    # Empty and text entries: flagged, said in the status line, the last good map stays.
    runs = lab.runs()
    for bad in ["", "abc", "1/0", "2..5"]:
        lab.cell(2, 1).fill(bad)
        assert lab.cell(2, 1).get_attribute("aria-invalid") == "true", bad
        assert "invalid" in lab.cell(2, 1).get_attribute("class")
        assert lab.page.get_attribute("#kl-status", "data-kind") == "error"
        assert "row 3, column 2" in lab.page.inner_text("#kl-status")
        assert lab.page.get_attribute("body", "data-kl-valid") == "0"
        np.testing.assert_array_equal(lab.feature_map(), good)
    assert lab.runs() == runs  # nothing was computed from a broken kernel
    lab.page.fill("#kl-scale", "zero")
    assert lab.page.get_attribute("#kl-scale", "aria-invalid") == "true"
    lab.page.fill("#kl-scale", "1")
    lab.page.fill("#kl-stride", "")
    assert lab.page.get_attribute("#kl-stride", "aria-invalid") == "true"
    lab.page.fill("#kl-stride", "1")
    # Fixing the cell brings the page back: the map follows the numbers again.
    lab.cell(2, 1).fill("3")
    edited[2][1] = 3
    assert lab.page.get_attribute("body", "data-kl-valid") == "1"
    assert lab.cell(2, 1).get_attribute("aria-invalid") == "false"
    np.testing.assert_allclose(lab.feature_map(), reference(sample_rgb, edited, 1, "valid", "grey"), atol=2e-5)
    lab.close()


def test_lab_is_keyboard_usable(browser, lab_file, sample_rgb):
    lab = Lab(browser, lab_file.as_uri())
    page = lab.page
    # A preset from the keyboard: focus its button, press Enter.
    page.focus(".kl-preset[data-name='sharpen']")
    page.keyboard.press("Enter")
    assert page.get_attribute(".kl-preset[data-name='sharpen']", "aria-pressed") == "true"
    # Arrow keys walk the grid; typing replaces the focused number.
    lab.cell(0, 0).focus()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("End")
    page.keyboard.press("ArrowRight")  # at the end of the text: the next cell
    assert page.evaluate("[document.activeElement.dataset.r, document.activeElement.dataset.c]") == ["1", "1"]
    page.keyboard.type("9")  # the cell's text is selected when it is reached by an arrow key
    assert lab.cell(1, 1).input_value() == "9"
    ref = reference(sample_rgb, [[0, -1, 0], [-1, 9, -1], [0, -1, 0]], 1, "valid", "grey")
    # The map from the keyboard: focus it, arrows move the explained pixel.
    page.focus("#kl-maps canvas[data-ch='0']")
    start = page.eval_on_selector("#kl-readout", "e => [+e.dataset.y, +e.dataset.x]")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowDown")
    y, x = start[0] + 1, start[1] + 1
    assert page.eval_on_selector("#kl-readout", "e => [+e.dataset.y, +e.dataset.x]") == [y, x]
    assert lab.shown() == pytest.approx(float(ref[0, y, x]), abs=2e-5)
    lab.close()


def test_upload_a_photo(browser, lab_file, tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(40, 60, 3), dtype=np.uint8)  # smaller than the lab's size: no resize
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    (tmp_path / "noise.png").write_bytes(buf.getvalue())
    lab = Lab(browser, lab_file.as_uri())
    runs = lab.runs()
    lab.page.set_input_files("#kl-file", str(tmp_path / "noise.png"))
    lab.until(f"+document.body.dataset.klRuns > {runs} && CX.KL.source === 'upload'")
    assert "noise.png" in lab.page.inner_text("#kl-photo-caption")
    np.testing.assert_allclose(lab.feature_map(), reference(rgb, EDGE, 1, "valid", "grey"),
                               atol=2e-5)
    # A file that is not an image: said, and the page goes on.
    (tmp_path / "notes.png").write_bytes(b"not a picture")
    lab.page.set_input_files("#kl-file", str(tmp_path / "notes.png"))
    lab.page.wait_for_selector("#kl-status[data-kind='error']")
    assert "notes.png" in lab.page.inner_text("#kl-status")
    lab.close()


def test_explainer_has_a_kernel_lab_on_its_image(browser, trained_run, tmp_path):
    from cnnlab.explain import Explainer

    path = Explainer(trained_run).export(tmp_path / "explainer.html")
    lab = Lab(browser, path.as_uri())
    page = lab.page
    page.click("nav.tabs button[data-tab='kernellab']")
    assert page.is_visible("#kl-grid")
    page.wait_for_selector("#kl-source option[value='explainer']:not([disabled])", state="attached")
    page.select_option("#kl-source", "explainer")
    # The reference: the payload's own image, decoded by Pillow.
    import base64

    url = page.evaluate("CX.payload.image.png")
    rgb = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))
    assert page.evaluate("[CX.KL.res.H, CX.KL.res.W]") == [rgb.shape[0] - 2, rgb.shape[1] - 2]
    np.testing.assert_allclose(lab.feature_map(), reference(rgb, EDGE, 1, "valid", "grey"),
                               atol=2e-5)
    # Arrow keys in the lab move the lab's pixel, not the network's neuron.
    selected = page.evaluate("JSON.stringify(CX.sel)")
    page.focus("#kl-maps canvas[data-ch='0']")
    page.keyboard.press("ArrowLeft")
    assert page.evaluate("JSON.stringify(CX.sel)") == selected
    page.screenshot(path=str(tmp_path / "explainer-kernel-lab.png"), full_page=True)
    lab.close()
