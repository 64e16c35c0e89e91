"""Batched augmentation against the training step it feeds, at photo sizes (128-224 px).

For each size: images/s of the Augmenter (presets standard and strong) on a float batch,
and of a training step of the default model (vgg_bn, in what --precision auto picks), with
the augmentation's share of an augmented step. The two alternate call by call, so that a
shared machine's load weighs on both alike; figures are medians.

    .venv/bin/python benchmarks/bench_augment.py
    .venv/bin/python benchmarks/bench_augment.py --sizes 128 --model resnet_small --batch 64
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
import torch.nn.functional as F

from cnnlab.data.augment import Augmenter
from cnnlab.device import choose_precision, fast_optimizer_kwargs
from cnnlab.model.build import build_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="128,160,224")
    ap.add_argument("--model", default="vgg_bn")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, medians of {args.repeat}")
    print(f"{'px':>4} {'standard img/s':>15} {'strong img/s':>13} {'step img/s':>11} {'standard share':>15} {'strong share':>13}")
    for size in (int(s) for s in args.sizes.split(",")):
        g = torch.Generator().manual_seed(0)
        x = torch.rand(args.batch, 3, size, size, generator=g)
        y = torch.randint(0, 10, (args.batch,), generator=g)
        model = build_model(args.model, input=(size, size, 3), classes=10, seed=0)
        precision, cl, _ = choose_precision("auto", torch.device("cpu"), model)
        if cl:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), 1e-4, **fast_optimizer_kwargs(torch.device("cpu")))
        augs = {"standard": Augmenter("standard"), "strong": Augmenter("strong")}

        def step():
            xb = x.contiguous(memory_format=torch.channels_last) if cl else x
            ctx = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
            with ctx:
                loss = F.cross_entropy(model(xb).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        calls = {"standard": lambda: augs["standard"](x, g), "strong": lambda: augs["strong"](x, g), "step": step}
        times: dict[str, list[float]] = {k: [] for k in calls}
        for i in range(args.repeat + 1):
            for k, f in calls.items():
                t0 = time.perf_counter()
                f()
                if i:
                    times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        rate = {k: args.batch / v for k, v in med.items()}
        share = {k: med[k] / (med[k] + med["step"]) for k in augs}
        print(f"{size:>4} {rate['standard']:>15.0f} {rate['strong']:>13.0f} {rate['step']:>11.1f} "
              f"{share['standard']:>14.1%} {share['strong']:>13.1%}   ({args.model} {precision}{'+CL' if cl else ''})",
              flush=True)


if __name__ == "__main__":
    main()
