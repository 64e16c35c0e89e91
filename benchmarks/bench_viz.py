"""How long does each `cnnlab viz` picture take, and how much of it is drawing?

For each figure: the time to compute the numbers (torch), the time to build and save the
PNG (matplotlib), and the PNG's size. Models are presets with untrained weights at 64x64x3
(the timings do not depend on training); the kernels figure uses scikit-learn's sample
photo at the default size (longest side 256) and at its full 427x640. Times are the best of
`--repeat` runs, in wall-clock seconds and in CPU seconds of this process (the second is
less inflated when other programs share the cores).

    .venv/bin/python benchmarks/bench_viz.py [--presets tinyvgg resnet_small] [--repeat 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from cnnlab.model.build import build_model
from cnnlab.viz import (feature_maps, gradcam, plot_featuremaps, plot_filters, plot_gradcam, plot_kernels)
from cnnlab.io.figures import save_figure
from cnnlab.viz.kernels import DEFAULT_KERNELS, apply_kernels, get_kernels, prepare_image, to_gray


def timed(fn, repeat: int) -> tuple[float, float, object]:
    """(best wall seconds, best CPU seconds, last result)."""
    wall, cpu, result = [], [], None
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return min(wall), min(cpu), result


def row(name: str, compute: tuple, draw: tuple, png: Path) -> None:
    print(f"| {name} | {compute[0]:.3f} | {compute[1]:.3f} | {draw[0]:.2f} | {draw[1]:.2f} | "
          f"{png.stat().st_size / 1024:.0f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["tinyvgg", "resnet_small"])
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    out = Path(tempfile.mkdtemp(prefix="bench_viz_"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| figure | compute wall s | compute CPU s | build+save wall s | build+save CPU s | PNG KiB |")
    print("|---|---:|---:|---:|---:|---:|")

    for size in (256, None):
        gray = to_gray(prepare_image(None, size))
        kernels = get_kernels(DEFAULT_KERNELS)
        compute = timed(lambda: apply_kernels(gray, kernels), args.repeat)
        png = out / f"kernels_{size}.png"
        draw = timed(lambda: save_figure(plot_kernels(None, DEFAULT_KERNELS, size=size), png), args.repeat)
        row(f"kernels, 8 kernels, photo {gray.shape[0]}x{gray.shape[1]}", compute, draw, png)

    for preset in args.presets:
        model = build_model(preset, classes=10, seed=0).eval()
        h, w, c = model.input_shape
        x = torch.rand(c, h, w)
        png = out / f"filters_{preset}.png"
        draw = timed(lambda: save_figure(plot_filters(model), png), args.repeat)
        row(f"filters {preset} (first layer)", (0.0, 0.0), draw, png)
        compute = timed(lambda: feature_maps(model, x), args.repeat)
        png = out / f"maps_{preset}.png"
        draw = timed(lambda: save_figure(plot_featuremaps(model, x), png), args.repeat)
        row(f"featuremaps {preset} (conv+pool layers, <= 32 channels)", compute, draw, png)
        compute = timed(lambda: gradcam(model, x), args.repeat)
        png = out / f"cam_{preset}.png"
        draw = timed(lambda: save_figure(plot_gradcam(model, [x, x, x]), png), args.repeat)
        row(f"gradcam {preset} (1 image; figure: 3 images)", compute, draw, png)
    print(f"figures in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
