"""Does the input pipeline bound photo training? Its parts against the training step, per size.

For each image size: decoding one JPEG into the decode-once cache (once per run, per image:
the cache is read, never decoded again, in every epoch and at every progressive size), the
photo recipe's batched augmentation of a cached batch (random resized crop + flip, sampled
straight at the training size of the moment), and photonet's training step (bf16 autocast +
channels_last where the CPU has bf16, as the run would pick; fp32 otherwise) at that size.

    .venv/bin/python benchmarks/bench_photo_pipeline.py --jpegs ~/data/imagenette/train
    .venv/bin/python benchmarks/bench_photo_pipeline.py --jpegs DIR --sizes 128 160 224 --model photonet_small
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from cnnlab.data.augment import Augmenter
from cnnlab.data.cache import decode_one
from cnnlab.device import bf16_supported, time_steps
from cnnlab.model.build import build_model
from cnnlab.model.spec import load_spec, size_free


def best_of(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jpegs", type=Path, required=True, help="a folder with JPEGs (searched recursively)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 160, 224])
    ap.add_argument("--model", default="photonet")
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    files = sorted(args.jpegs.rglob("*.JPEG")) + sorted(args.jpegs.rglob("*.jpg"))
    files = files[:: max(1, len(files) // 64)][:64]
    precision = "bf16" if bf16_supported(torch.device("cpu")) else "fp32"
    spec = load_spec(args.model)
    stride = size_free(spec)[0]
    print(f"{args.model}, batch {args.batch}, {precision}, {torch.get_num_threads()} threads; {len(files)} JPEGs")
    print("| size | decode, ms/image (once) | augment to 7/8 size, ms/batch | step at 7/8, ms | step at full, ms "
          "| augment / step |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        t0 = time.perf_counter()
        pixels = [decode_one(str(f), (size, size), 3, "stretch") for f in files]
        decode = (time.perf_counter() - t0) / len(files) * 1000
        batch = (pixels * (args.batch // len(pixels) + 1))[: args.batch]
        x = torch.from_numpy(np.stack(batch))  # (N, C, H, W) uint8, as the cache holds them
        small = max(round(size * 0.875 / stride) * stride, stride)
        aug = Augmenter("photo")
        g = torch.Generator().manual_seed(0)
        augment = best_of(lambda: aug(x.float().div(255), g, (small, small))) * 1000
        model = build_model(spec, input=(size, size, 3), classes=10, seed=0)
        y = torch.arange(args.batch) % 10
        steps = {}
        for s in (small, size):
            xs = torch.rand(args.batch, 3, s, s)
            rate = next(iter(time_steps(model, xs, y, [(precision, precision == "bf16")], steps=3).values()))
            steps[s] = args.batch / rate * 1000
        print(f"| {size} | {decode:.1f} | {augment:.0f} ({small} px) | {steps[small]:.0f} | {steps[size]:.0f} | "
              f"{augment / steps[small]:.0%} |", flush=True)


if __name__ == "__main__":
    main()
