"""RUN/report.html: one self-contained page with every section, opened offline."""

from __future__ import annotations

import base64
import io
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from cnnlab.eval.evaluate import evaluate_run
from cnnlab.eval.report import write_report

SECTIONS = ("config", "data", "model", "training", "eval-test")


class Page(HTMLParser):
    """Collects every tag's attributes and the visible text."""

    def __init__(self, html: str):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data):
        self.text.append(data)

    def attrs(self, tag: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag]


@pytest.fixture(scope="module")
def report(trained_run, tmp_path_factory) -> Path:
    """A copy of the trained run with a skipped file, evaluated (which writes the report)."""
    run = tmp_path_factory.mktemp("report") / "small"
    shutil.copytree(trained_run, run)
    (run / "skipped.csv").write_text("path,reason\n/data/cats/broken_cat.jpg,truncated file\n")
    evaluate_run(run, "test", device="cpu")
    return run / "report.html"


def test_every_section_is_present(report):
    page = Page(report.read_text())
    ids = {a.get("id") for _, a in page.tags}
    assert set(SECTIONS) <= ids
    text = " ".join(page.text)
    # config, data counts per class and split, skipped files, parameter formulas, metrics
    assert "epochs" in text and "img_size" in text
    assert "broken_cat.jpg" in text and "truncated file" in text
    assert "(3*3*3+1)*8 = 224" in text and "1,594" in text  # conv2d's formula, total params
    for words in ("precision", "recall", "F1", "support", "ROC-AUC", "macro avg", "weighted avg",
                  "Confusion matrices", "Top losses", "Training curves", "hbar", "vbar"):
        assert words in text, words
    assert "Best weights: epoch 15" in text


def test_self_contained_images_and_no_network(report):
    html = report.read_text()
    page = Page(html)
    images = page.attrs("img")
    assert len(images) == 4  # curves, two confusion matrices, top losses
    for img in images:
        head, data = img["src"].split(",", 1)
        assert head == "data:image/png;base64"
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            assert im.format == "PNG" and im.width > 100
    assert not page.attrs("script") and not page.attrs("link")
    for _, a in page.tags:
        for key in ("src", "href"):
            assert not a.get(key, "").startswith(("http:", "https:", "//")), a
    assert (report.parent / "curves.png").is_file()


def test_report_before_any_evaluation(trained_run, tmp_path):
    run = tmp_path / "fresh"
    shutil.copytree(trained_run, run)
    path = write_report(run)
    text = " ".join(Page(path.read_text()).text)
    assert "Not evaluated yet" in text and "Training curves" in text
    assert "No skipped.csv" in text or "no skipped.csv" in text


AUTO_LINES = [  # what `cnnlab train` printed for these choices, written out by hand
    "auto    38 training images in 2 classes, median 40x60 px; no --time-limit: planned for 10 min on cpu",
    "        img_size 32x48: the largest of 32, 48, 64 px not above the images' median 40x60",
    "        batch_size 32: 30 images: more steps per epoch",
    "        balanced True: class 'vbar' has 8 images, 27% of the largest: class-balanced sampling",
    "        monitor val_macro_f1: class 'vbar' has 8 images, 27% of the largest: best weights by macro-F1, "
    "not accuracy",
]


def test_the_automatic_choices_show_as_train_printed_them(trained_run, tmp_path):
    """config.yaml's `auto` block (as AutoChoice.to_dict saves it) is shown as the lines the
    run printed (AutoChoice.block), not as the JSON of the dict."""
    import yaml

    from cnnlab.train.auto import AutoChoice

    choice = AutoChoice(facts=AUTO_LINES[0].removeprefix("auto    "))
    choice.set("img_size", (32, 48), "the largest of 32, 48, 64 px not above the images' median 40x60")
    choice.set("batch_size", 32, "30 images: more steps per epoch")
    small = "class 'vbar' has 8 images, 27% of the largest"
    choice.set("balanced", True, small + ": class-balanced sampling")
    choice.set("monitor", "val_macro_f1", small + ": best weights by macro-F1, not accuracy")
    assert choice.block() == "\n".join(AUTO_LINES)  # what the run printed

    run = tmp_path / "auto"
    shutil.copytree(trained_run, run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**config, "auto": choice.to_dict()}, sort_keys=False))
    html = write_report(run).read_text()

    class Pre(HTMLParser):
        def __init__(self):
            super().__init__()
            self.blocks, self._in = [], False

        def handle_starttag(self, tag, attrs):
            if tag == "pre":
                self._in = True
                self.blocks.append("")

        def handle_endtag(self, tag):
            self._in = self._in and tag != "pre"

        def handle_data(self, data):
            if self._in:
                self.blocks[-1] += data

    pre = Pre()
    pre.feed(html)
    assert pre.blocks == ["\n".join(AUTO_LINES)]
    text = " ".join(Page(html).text)
    assert "facts" not in text and "chosen" not in text  # no JSON of the dict
    assert not [t for t in Page(html).text if t.strip().startswith("{")]
    assert "epochs" in text and "img_size" in text  # the other config values are still listed


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


@pytest.mark.browser
def test_opens_offline_in_a_browser(report):
    """Chromium loads the page with every request outside the file refused."""
    from playwright import sync_api  # a dev dependency: missing, the test fails
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium installed")
    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})

        def guard(route):
            requests.append(route.request.url)
            if route.request.url.startswith(("file:", "data:")):
                route.continue_()
            else:
                route.abort()

        page.route("**/*", guard)
        page.goto(report.as_uri())
        for section in SECTIONS:
            assert page.locator(f"section#{section}").is_visible(), section
        widths = page.evaluate("Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
        assert len(widths) == 4 and min(widths) > 100
        assert page.title() == "cnnlab report: small"
        browser.close()
    assert all(u.startswith(("file:", "data:")) for u in requests), requests


def test_names_from_the_users_files_are_escaped(report, tmp_path):
    """A class name, a skipped file's path and a config value that look like HTML stay text."""
    import json

    import yaml

    run = tmp_path / "tricky"
    shutil.copytree(report.parent, run)
    evil = '<script>alert("x")</script>'
    (run / "skipped.csv").write_text(f"path,reason\n/data/{evil}.jpg,truncated & <b>gone</b>\n")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["note"] = "a < b & c"
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    metrics = run / "eval" / "test" / "metrics.json"
    m = json.loads(metrics.read_text())
    m["per_class"]["<i>hbar</i>"] = m["per_class"].pop("hbar")
    m["classes"] = ["<i>hbar</i>" if c == "hbar" else c for c in m["classes"]]
    metrics.write_text(json.dumps(m))
    html = write_report(run).read_text()
    assert "<script>" not in html and "<i>hbar</i>" not in html and "<b>gone</b>" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    text = " ".join(Page(html).text)  # as a browser shows it
    assert evil in text and "truncated & <b>gone</b>" in text and "<i>hbar</i>" in text and "a < b & c" in text
