"""How big and how fast is the explainer page for models the size of the presets?

For each preset (64x64x3 input, 10 classes, untrained weights: the sizes and timings do not
depend on training): the time to compute the payload with torch, the size of the page,
and, when Debian's chromium and Playwright are here, the time until the page is ready in a
headless browser and the time to show one conv neuron's arithmetic.

    .venv/bin/python benchmarks/bench_explain.py [--presets seed tinyvgg vgg_bn resnet_small]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from cnnlab.explain.page import build_page  # noqa: E402
from cnnlab.explain.payload import explain  # noqa: E402
from cnnlab.model.build import build_model  # noqa: E402
from imagegen import draw  # noqa: E402

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def browser_times(html_path: Path) -> tuple[float, float] | None:
    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not chromium:
        return None
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=ARGS)
        page = b.new_page(viewport={"width": 1440, "height": 900})
        t0 = time.perf_counter()
        page.goto(html_path.as_uri())
        page.wait_for_selector("body[data-loads='1']", timeout=60_000)
        ready = time.perf_counter() - t0
        t0 = time.perf_counter()
        # the conv layer with the most input channels: the heaviest panel
        li = page.evaluate("""() => { let best = -1, n = -1;
            CX.payload.layers.forEach((L, i) => { if (L.kind === 'conv' && L.conv.kernel.shape[1] > n) {
              n = L.conv.kernel.shape[1]; best = i; } }); return best; }""")
        page.evaluate(f"CX.showAllChannels = true; CX.select({{li: {li}, ch: 0, y: 1, x: 1}})")
        page.wait_for_selector("#detail [data-role='check']")
        click = time.perf_counter() - t0
        b.close()
    return ready, click


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", nargs="+", default=["seed", "tinyvgg", "vgg_bn", "resnet_small"])
    args = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    print(f"{'preset':14} {'params':>10} {'payload s':>10} {'floats':>11} {'page MB':>8} "
          f"{'ready s':>8} {'click s':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.presets:
            model = build_model(name, classes=10, seed=0).eval()
            h, w, c = model.input_shape
            meta = {"classes": [f"class{i}" for i in range(10)], "input": [h, w, c],
                    "normalization": {"mean": [0.5] * c, "std": [0.25] * c}}
            image = draw("cross", (h, w), np.random.default_rng(0))
            explain(model, meta, image)  # warm-up
            t0 = time.perf_counter()
            payload = explain(model, meta, image)
            seconds = time.perf_counter() - t0
            html = build_page(payload)
            path = Path(tmp) / f"{name}.html"
            path.write_text(html)
            times = browser_times(path)
            ready, click = times if times else (float("nan"), float("nan"))
            params = sum(p.numel() for p in model.parameters())
            print(f"{name:14} {params:>10,} {seconds:>10.2f} {payload['blob']['floats']:>11,} "
                  f"{len(html) / 1e6:>8.2f} {ready:>8.2f} {click:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
