"""Feeding a GPU: training steps in a row with the batch already on the device, copied from
ordinary (pageable) host memory, or copied through pinned memory (cnnlab's way).

A copy from pageable host memory to a CUDA device starts with a stream sync (NVIDIA's CUDA
runtime documentation, "API synchronization behavior"), so the host cannot queue the next
step while the GPU runs this one; through pinned memory it can. This times ``--steps``
consecutive steps with one synchronisation at the end (a per-step sync would hide the
difference), bf16 autocast + channels_last, SGD as the airbench recipe:

* ``on device``   the batch was copied before the clock: the GPU's own limit;
* ``pageable``    the bare step with ``x.to(device, non_blocking=True)`` from pageable memory;
* ``pinned``      the bare step with ``x.pin_memory().to(device, non_blocking=True)``;
* ``cnnlab``      ``Trainer.train_step`` on the host batch (``cnnlab.device.to_device``).

    python3 benchmarks/bench_feed.py --device cuda                      # airbench, 32 px, batch 1024
    .venv/bin/python benchmarks/bench_feed.py --device cpu --steps 3    # the same code on the CPU

On the CPU all four are the same step (no copy), a check that the script runs.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
import torch.nn.functional as F

from cnnlab.data.normalize import Normalization
from cnnlab.device import _sync, bf16_supported, pick_device
from cnnlab.model.build import build_model
from cnnlab.train.loop import Trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="airbench")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    device = pick_device(args.device)
    precision = "bf16" if bf16_supported(device) else "fp32"
    g = torch.Generator().manual_seed(0)
    xs = [torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8, generator=g) for _ in range(4)]
    ys = [torch.randint(0, 10, (args.batch,), generator=g) for _ in range(4)]

    def build():
        model = build_model(args.model, input=(args.size, args.size, 3), classes=10, seed=0).to(device)
        return model.to(memory_format=torch.channels_last)

    def bare(copy):
        """A bare training step on batch i, which ``copy(host tensor, i)`` puts on the device."""
        model = build()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
        ctx = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext

        def step(i):
            x, y = copy(xs[i % 4], i % 4, 0), copy(ys[i % 4], i % 4, 1)
            x = ((x.float() / 255 - 0.5) / 0.25).contiguous(memory_format=torch.channels_last)
            with ctx():
                loss = F.cross_entropy(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    on_device = [x.to(device) for x in xs], [y.to(device) for y in ys]  # [images, labels][batch]

    def cnnlab_step():
        model = build()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
        t = Trainer(model, opt, device=device, precision=precision, channels_last=True,
                    normalization=Normalization((0.5,) * 3, (0.25,) * 3))
        t._reset_metrics()
        return lambda i: t.train_step(xs[i % 4], ys[i % 4])

    cuda = device.type == "cuda"
    variants = {
        "on device": bare(lambda t, i, which: on_device[which][i]),
        "pageable": bare(lambda t, i, which: t.to(device, non_blocking=True)),
        "pinned": bare(lambda t, i, which: t.pin_memory().to(device, non_blocking=True) if cuda else t),
        "cnnlab": cnnlab_step(),
    }
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {device.type}: {where}; {args.model} {args.size} px, batch {args.batch}, "
          f"{precision}, {args.steps} steps in a row, images/s")
    rates: dict[str, list[float]] = {k: [] for k in variants}
    for round_ in range(3):  # round 0 warms up (cuDNN's autotuning, the pinned-memory cache)
        for name, step in variants.items():
            _sync(device)
            t0 = time.perf_counter()
            for i in range(args.steps if round_ else 2):
                step(i)
            _sync(device)
            if round_:
                rates[name].append(args.batch * args.steps / (time.perf_counter() - t0))
    best = {k: max(v) for k, v in rates.items()}
    for name, r in best.items():
        print(f"  {name:<10} {r:>10,.0f}   {r / best['on device']:.2f}x the batch already on the device")


if __name__ == "__main__":
    main()
