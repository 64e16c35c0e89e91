"""Predict latency (batch 1) and throughput (batch 64): eager torch vs onnxruntime, per preset.

For every preset at its own input size (untrained weights: speed does not depend on what was
learned) the model is exported with `cnnlab.export.onnx.export_onnx` and both sides run the
same graph: raw pixels (N, H, W, 3) -> preprocessing -> CNN -> probabilities, in float32
on the CPU, with the same number of threads. Figures are medians over repeated calls
after a warm-up:

  batch 1    milliseconds per call (one image: what an app or the explain server pays)
  batch 64   images per second

    flock /tmp/cnnlab-bench.lock .venv/bin/python benchmarks/bench_onnx.py
    .venv/bin/python benchmarks/bench_onnx.py --presets seed,tinyvgg --threads 1

Needs the [onnx] extra (onnx, onnxscript, onnxruntime); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cnnlab.data.normalize import Normalization
from cnnlab.export.onnx import OnnxModel, WithPreprocessing, export_onnx
from cnnlab.model.build import build_model
from cnnlab.model.spec import list_presets


def timed(fn, repeats: int, min_seconds: float = 1.0) -> float:
    """Median seconds of one call of fn, over at least `repeats` calls and `min_seconds`."""
    for _ in range(3):
        fn()
    times, start = [], time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if len(times) > 2000:
            break
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default=",".join(list_presets()))
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime as ort

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"commit {commit}, {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({args.threads} threads), onnxruntime {ort.__version__}; load before: {os.getloadavg()}")
    print("| preset | input | MACs/image | eager batch 1 (ms) | ONNX batch 1 (ms) | speed-up | "
          "eager batch 64 (img/s) | ONNX batch 64 (img/s) | speed-up |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    from cnnlab.model.summary import summary

    with tempfile.TemporaryDirectory() as tmp:
        for name in args.presets.split(","):
            torch.manual_seed(0)
            model = build_model(name, classes=10).eval()
            h, w, c = model.input_shape
            meta = {"classes": [str(i) for i in range(10)], "normalization": Normalization.rescale(c).to_dict()}
            path = export_onnx(model, meta, Path(tmp) / f"{name}.onnx")
            onnx_model = OnnxModel(path)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = args.threads
            opts.inter_op_num_threads = 1
            onnx_model.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            eager = WithPreprocessing(model, Normalization.rescale(c)).eval()
            row = [name, f"{h}x{w}x{c}", f"{summary(model).total_macs:,}"]
            figures = {}
            for n in (1, 64):
                x = np.random.default_rng(0).integers(0, 256, (n, h, w, c)).astype(np.float32)
                xt = torch.from_numpy(x)

                def run_eager():
                    with torch.inference_mode():
                        eager(xt)

                figures[("eager", n)] = timed(run_eager, args.repeats)
                figures[("onnx", n)] = timed(lambda: onnx_model.probabilities(x), args.repeats)
                with torch.inference_mode():
                    diff = float(np.abs(eager(xt).numpy() - onnx_model.probabilities(x)).max())
                assert diff < 1e-4, f"{name}: ONNX differs from eager by {diff}"
            e1, o1 = figures[("eager", 1)] * 1e3, figures[("onnx", 1)] * 1e3
            e64, o64 = 64 / figures[("eager", 64)], 64 / figures[("onnx", 64)]
            row += [f"{e1:.2f}", f"{o1:.2f}", f"{e1 / o1:.2f}x", f"{e64:,.0f}", f"{o64:,.0f}", f"{o64 / e64:.2f}x"]
            print("| " + " | ".join(row) + " |", flush=True)
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
