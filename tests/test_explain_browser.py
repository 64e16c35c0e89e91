"""The explainer page in a real browser: Debian's chromium, driven by Playwright.

The exported file and the served page are opened with the network cut off (any request
but the page itself and, when served, its own server fails the test), any console error
fails the test, and clicking a neuron must show arithmetic that adds up to the model's own
value. Screenshots go to the test's tmp dir. Skipped, saying why, where chromium is absent
(.ci/run installs it with apt-get).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from browsertools import browser  # noqa: F401 (a fixture)
from imagegen import draw

pytestmark = pytest.mark.browser

class Watched:
    """A page whose console errors and outside requests are recorded (and the requests refused)."""

    def __init__(self, browser, allowed_prefixes: tuple[str, ...]):
        self.page = browser.new_page(viewport={"width": 1440, "height": 900})
        self.errors: list[str] = []
        self.outside: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

        def route(r):
            if r.request.url.startswith(allowed_prefixes):
                r.continue_()
            else:
                self.outside.append(r.request.url)
                r.abort()

        self.page.route("**/*", route)

    def ready(self, loads: int = 1) -> None:
        self.page.wait_for_selector(f"body[data-loads='{loads}']", timeout=20_000)

    def values(self, role: str) -> list[float]:
        return [float(v) for v in self.page.eval_on_selector_all(
            f"#detail [data-role='{role}']", "els => els.map(e => e.dataset.value)")]

    def checks_ok(self) -> None:
        oks = self.page.eval_on_selector_all("#detail [data-role='check']", "els => els.map(e => e.dataset.ok)")
        assert oks and all(ok == "1" for ok in oks), self.page.inner_text("#detail")

    def click_pixel(self, selector: str, y: int, x: int, H: int, W: int) -> None:
        """Click the middle of map pixel (y, x) of a canvas showing an H x W map."""
        cw, ch, bl, bt = self.page.eval_on_selector(
            selector, "c => [c.clientWidth, c.clientHeight, c.clientLeft, c.clientTop]")
        self.page.click(selector, position={"x": bl + (x + 0.5) * cw / W, "y": bt + (y + 0.5) * ch / H})

    def close(self) -> None:
        assert not self.errors, f"console errors: {self.errors}"
        assert not self.outside, f"the page tried to reach the network: {self.outside}"
        self.page.close()


@pytest.fixture(scope="module")
def explainer(trained_run):
    from cnnlab.explain import Explainer

    return Explainer(trained_run)


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_exported_page_offline_conv_neuron_adds_up(browser, explainer, tmp_path):
    path = explainer.export(tmp_path / "explainer.html")
    w = Watched(browser, ("file://", "data:"))
    w.page.goto(path.as_uri())
    w.ready()
    assert w.page.get_attribute("#prediction", "data-class") in ("hbar", "vbar")

    # Click conv2d (layer 1), channel 3, row 10, column 20.
    k, y, x = 3, 10, 20
    w.click_pixel("#layer-1 figure.tile[data-ch='3'] canvas", y, x, 32, 32)
    assert f"channel {k}, row {y}, column {x}" in w.page.inner_text("#detail h2")
    [pre] = w.values("sum")
    [shown_out] = w.values("activation")
    channel_sums, [bias] = w.values("channel-sum"), w.values("bias")
    assert len(channel_sums) == 3  # R, G, B
    assert sum(channel_sums) + bias == pytest.approx(pre, abs=1e-6)
    assert shown_out == pytest.approx(max(pre, 0.0), abs=1e-7)  # relu, as shown
    w.checks_ok()

    # ... and the model's own numbers, computed here with torch.
    payload_image = w.page.evaluate("CX.payload.image.name")
    src = next(p for p, _ in explainer.run.split()["test"] if p.endswith(payload_image))
    xt = explainer.preprocessor.load(src).unsqueeze(0)
    conv = explainer.model.layers["conv2d"]
    with torch.no_grad():
        torch_pre = F.conv2d(F.pad(xt, (1, 1, 1, 1)), conv.conv.weight, conv.conv.bias)[0, k, y, x].item()
        torch_out = explainer.model.features(xt)["conv2d"][0, k, y, x].item()
    assert pre == pytest.approx(torch_pre, abs=1e-5)
    assert shown_out == pytest.approx(torch_out, abs=1e-5)
    w.page.screenshot(path=str(tmp_path / "explainer-conv.png"))

    # A max-pool window, a Dense unit (the logit), the softmax: the numbers each panel shows
    # against the model's, computed here with torch from the layers' own inputs and weights.
    with torch.no_grad():
        feats = explainer.model.features(xt)
        window = feats["conv2d"][0, 5, 8:10, 18:20]  # pool 2x2, stride 2: output (4, 9)
        dense = explainer.model.layers["dense"]
        lin = getattr(dense, "linear", dense)
        logits = F.linear(feats["flatten"], lin.weight, lin.bias)[0]
        softmax = torch.softmax(logits, 0)
    w.click_pixel("#layer-2 figure.tile[data-ch='5'] canvas", 4, 9, 16, 16)
    assert w.page.get_attribute("#detail", "data-kind") == "pool"
    [pooled] = w.values("activation")
    assert pooled == pytest.approx(window.max().item(), abs=1e-5)
    assert pooled == pytest.approx(feats["max_pooling2d"][0, 5, 4, 9].item(), abs=1e-5)
    w.checks_ok()
    w.page.click("#layer-6 .bar-row[data-unit='1']")
    assert w.page.get_attribute("#detail", "data-kind") == "dense"
    [pre], [logit], [bias] = w.values("sum"), w.values("activation"), w.values("bias")
    assert pre == pytest.approx(logits[1].item(), abs=1e-4) and logit == pytest.approx(logits[1].item(), abs=1e-4)
    assert bias == pytest.approx(lin.bias[1].item(), abs=1e-6)
    w.checks_ok()
    w.page.click("#layer-7 .bar-row[data-unit='0']")
    assert w.page.get_attribute("#detail", "data-kind") == "output"
    probs = w.values("prob")
    assert probs == pytest.approx(softmax.tolist(), abs=1e-5)
    assert probs == pytest.approx(explainer.model.predict_proba(xt)[0].tolist(), abs=1e-5)
    assert sum(probs) == pytest.approx(1.0, abs=1e-6)
    [total] = w.values("sum")  # the softmax's denominator, sum of e^(z - max z)
    assert total == pytest.approx(torch.exp(logits - logits.max()).sum().item(), abs=1e-5)
    w.checks_ok()
    w.page.screenshot(path=str(tmp_path / "explainer-softmax.png"), full_page=True)

    # Arrow keys step the selected neuron; the arithmetic follows.
    w.click_pixel("#layer-3 figure.tile[data-ch='0'] canvas", 0, 0, 14, 14)
    w.page.keyboard.press("ArrowRight")
    assert "row 0, column 1" in w.page.inner_text("#detail h2")
    w.checks_ok()
    w.close()


def test_playground_output_sizes_and_invalid_settings(browser, explainer, tmp_path):
    path = explainer.export(tmp_path / "explainer.html")
    w = Watched(browser, ("file://", "data:"))
    w.page.goto(path.as_uri())
    w.ready()
    w.page.click("nav.tabs button[data-tab='playground']")
    assert w.page.is_visible("#playground") and not w.page.is_visible("#overview")

    def setting(n, k, s, padding, p=0):
        w.page.fill("#pg-n", str(n))
        w.page.fill("#pg-k", str(k))
        w.page.fill("#pg-s", str(s))
        w.page.select_option("#pg-padding", padding)
        w.page.fill("#pg-p", str(p)) if padding == "explicit" else None
        w.page.dispatch_event("#pg-n", "input")
        return w.page.get_attribute("#pg-result", "data-valid"), w.page.get_attribute("#pg-result", "data-out")

    assert setting(32, 3, 1, "valid") == ("1", "30")
    assert setting(32, 3, 2, "same") == ("1", "16")
    assert setting(7, 3, 2, "explicit", 1) == ("1", "4")
    assert setting(8, 3, 2, "valid") == ("1", "3")
    assert "never used" in w.page.inner_text("#pg-notes")
    valid, _ = setting(4, 7, 1, "valid")
    assert valid == "0" and "larger than" in w.page.inner_text("#pg-result")
    w.page.select_option("#pg-layer", index=1)  # the model's first conv: 32, 3x3, same
    assert w.page.get_attribute("#pg-result", "data-out") == "32"
    w.page.screenshot(path=str(tmp_path / "explainer-playground.png"))
    w.close()


def test_served_page_upload_changes_the_prediction(browser, explainer, tmp_path):
    from cnnlab.explain.server import create_app
    from test_explain_server import running_server

    rng = np.random.default_rng(3)
    hbar, vbar = draw("hbar", (32, 32), rng), draw("vbar", (32, 32), rng)
    # The model itself gets these right; the page must follow it.
    assert explainer.payload_for_array(hbar)["prediction"]["class"] == "hbar"
    assert explainer.payload_for_array(vbar)["prediction"]["class"] == "vbar"

    with running_server(create_app(explainer)) as url:
        w = Watched(browser, (url, "data:"))
        w.page.goto(url + "/")
        w.ready()
        assert w.page.is_visible("#upload") and w.page.locator(".example").count() >= 2
        w.click_pixel("#layer-3 figure.tile[data-ch='2'] canvas", 7, 7, 14, 14)

        for loads, (name, image) in enumerate([("h.png", hbar), ("v.png", vbar), ("h2.png", hbar)], start=2):
            w.page.set_input_files("#file", files=[{"name": name, "mimeType": "image/png", "buffer": png(image)}])
            w.ready(loads)
            assert w.page.get_attribute("#prediction", "data-class") == name[0] + "bar"
            assert w.page.inner_text("#image-name") == name
            # the same neuron stays selected, with the new image's numbers, still adding up
            assert "channel 2, row 7, column 7" in w.page.inner_text("#detail h2")
            w.checks_ok()
            if name == "v.png":
                w.page.screenshot(path=str(tmp_path / "explainer-served-vbar.png"))

        # A file that is not an image: a clear message, the page and the server carry on.
        w.page.set_input_files("#file", files=[{"name": "notes.png", "mimeType": "image/png",
                                                "buffer": b"shopping list"}])
        w.page.wait_for_selector("#message.error", timeout=10_000)
        assert "notes.png" in w.page.inner_text("#message") and "not an image" in w.page.inner_text("#message")
        # chromium logs the refused request itself; that one, and only that one, is expected
        expected = [e for e in w.errors if "status of 415" in e]
        assert len(expected) == 1
        w.errors.remove(expected[0])
        w.page.click(".example[data-id='0']")
        w.ready(5)
        assert w.page.is_hidden("#message")
        w.page.screenshot(path=str(tmp_path / "explainer-served-example.png"))
        w.close()
