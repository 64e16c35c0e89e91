"""Every layer type, forward and backward, in each precision and memory layout.

A slow op on the hot path shows up as a layer that costs much more than its work: each
row gives the milliseconds of forward + backward of one layer on a batch, and, as a unit
of comparison, the same batch through a ReLU (a pass over memory that any layer must at
least make). The variants of one layer alternate call by call, so a shared machine's load
weighs on all of them alike; each figure is the median of ``--repeat`` calls.

    .venv/bin/python benchmarks/bench_layers.py                      # batch 32, 64x64x32
    .venv/bin/python benchmarks/bench_layers.py --size 128 --channels 64 --layers MaxPooling2D

Variants: fp32 NCHW (what `--precision fp32` ran before), fp32 channels_last, bf16 autocast
NCHW and bf16 channels_last.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from cnnlab.model.layers import LAYERS

# One instance of every layer type (arguments as a spec would give them).
EXAMPLES = {
    "Conv2D": {"filters": 32, "kernel_size": 3, "padding": "same", "activation": "relu"},
    "DepthwiseConv2D": {"kernel_size": 3, "padding": "same"},
    "SeparableConv2D": {"filters": 32, "kernel_size": 3, "padding": "same"},
    "MaxPooling2D": {"pool_size": 2},
    "AveragePooling2D": {"pool_size": 2},
    "GlobalAveragePooling2D": {},
    "GlobalMaxPooling2D": {},
    "ZeroPadding2D": {"padding": 1},
    "BatchNormalization": {},
    "Dropout": {"rate": 0.3},
    "SpatialDropout2D": {"rate": 0.3},
    "Flatten": {},
    "Dense": {"units": 128},
    "Activation": {"activation": "relu"},
    "ResidualBlock": {"filters": 32},
}
VARIANTS = (("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True))


def layer_module(name: str, args: dict, shape: tuple[int, int, int]):
    layer = LAYERS[name].build.from_args(args)
    if layer.needs == "flat":  # Dense: after a Flatten of the image
        return torch.nn.Sequential(torch.nn.Flatten(), layer.build((shape[0] * shape[1] * shape[2],)))
    return layer.build(shape)


def time_layer(module: torch.nn.Module, x: torch.Tensor, repeat: int) -> dict[str, float]:
    """ms of forward + backward in each variant, interleaved call by call."""
    runs = []
    for precision, cl in VARIANTS:
        m = module.to(memory_format=torch.channels_last) if cl else module
        xb = x.contiguous(memory_format=torch.channels_last) if cl else x.contiguous()
        xb = xb.detach().requires_grad_(True)
        ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext
        runs.append((f"{precision}{' CL' if cl else ''}", m, xb, ctx))
    out: dict[str, list[float]] = {name: [] for name, *_ in runs}
    for i in range(repeat + 2):
        for name, m, xb, ctx in runs:
            t0 = time.perf_counter()
            with ctx():
                y = m(xb)
            y.float().sum().backward()
            if i >= 2:  # two warm-up calls
                out[name].append(1000 * (time.perf_counter() - t0))
            xb.grad = None
            m.zero_grad(set_to_none=True)
    return {k: statistics.median(v) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--layers", default=",".join(EXAMPLES), help="comma-separated layer types")
    args = ap.parse_args()
    shape = (args.size, args.size, args.channels)
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.channels, args.size, args.size)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; input batch {args.batch} x "
          f"{args.size}x{args.size}x{args.channels}; ms of forward+backward, median of {args.repeat}")
    names = [n for n, _ in VARIANTS]
    head = "  ".join(f"{n}{' CL' if cl else '':<3}".rjust(9) for n, cl in VARIANTS)
    print(f"{'layer':<24} {head}   slowest / ReLU")
    relu = time_layer(layer_module("Activation", {"activation": "relu"}, shape), x, args.repeat)
    for name in args.layers.split(","):
        t = time_layer(layer_module(name, EXAMPLES[name], shape), x, args.repeat)
        cells = "  ".join(f"{v:9.2f}" for v in t.values())
        worst = max(t, key=t.get)
        print(f"{name:<24} {cells}   {t[worst] / relu['fp32']:5.1f}x ({worst})", flush=True)
    del names


if __name__ == "__main__":
    main()
