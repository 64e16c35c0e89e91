"""Training throughput of every preset at several sizes: fp32 against --precision auto,
cnnlab's Trainer against the bare-torch step of the same model.

Four steps of the same model on the same in-memory batch alternate one after the other
(so that a shared machine's load weighs on all alike); each figure is images/s of the
median step after a warm-up:

* ``torch fp32``   the step a tutorial writes: fp32, NCHW, torch's default AdamW;
* ``torch auto``   the same bare step in what ``--precision auto`` picks for this model on
                   this machine (cnnlab.device.choose_precision: bf16 + channels_last on CPUs
                   with native bf16, for models of >= 5M MACs/image) and a fused AdamW;
* ``cnnlab fp32`` and ``cnnlab auto``: cnnlab's Trainer.train_step in the same two settings
                   (normalisation on the fly, metrics summed on the device, fused AdamW);
* with ``--compile``, ``compiled``: ``cnnlab auto`` with ``Trainer(compile=True)``
                   (``cnnlab train --compile``); its warm-up round is the compile, untimed,
                   and its wall time is printed beside it.

    .venv/bin/python benchmarks/bench_precision.py                         # every preset, 32/64/128 px
    .venv/bin/python benchmarks/bench_precision.py --models seed --sizes 64 --batch 32 --steps 10
    python3 benchmarks/bench_precision.py --device cuda --batch 256 --steps 20   # on a GPU
    python3 benchmarks/bench_precision.py --device cuda --models airbench --sizes 32 --batch 1024 --compile

On a GPU the batch lies on the device before the clock starts (a loader with pinned memory
overlaps the copy with the step) and each step is timed to a ``torch.cuda.synchronize``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
import torch.nn.functional as F

from cnnlab.data.normalize import Normalization
from cnnlab.device import _sync, choose_precision, fast_optimizer_kwargs, pick_device
from cnnlab.model.build import build_model
from cnnlab.model.spec import list_presets
from cnnlab.train.loop import Trainer


def bare_step(model, x, y, precision: str, channels_last: bool, fused: bool):
    """A closure doing one plain training step (x uint8, on the device the model goes to)."""
    device = x.device
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    kw = fast_optimizer_kwargs(device) if fused else {}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **kw)
    mean, std = 0.5, 0.25
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def step():
        xb = (x.float() / 255 - mean) / std
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        ctx = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with ctx:
            loss = F.cross_entropy(model(xb).float(), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    return step


def cnnlab_step(model, x, y, precision: str, channels_last: bool, compile: bool = False):
    model = model.to(x.device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **fast_optimizer_kwargs(x.device))
    t = Trainer(model, opt, loss_fn=torch.nn.CrossEntropyLoss(label_smoothing=0.1), device=x.device, precision=precision,
                channels_last=channels_last, normalization=Normalization((0.5,) * x.shape[1], (0.25,) * x.shape[1]),
                compile=compile)
    t._reset_metrics()
    return lambda: t.train_step(x, y)


def bench(name: str, size: int, batch: int, steps: int, device: torch.device, compile: bool = False) -> dict:
    channels = 3
    build = lambda: build_model(name, input=(size, size, channels), classes=10, seed=0)  # noqa: E731
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (batch, channels, size, size), dtype=torch.uint8, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    precision, cl, why = choose_precision("auto", device, build())
    variants = {
        "torch fp32": bare_step(build(), x, y, "fp32", False, fused=False),
        "torch auto": bare_step(build(), x, y, precision, cl, fused=True),
        "cnnlab fp32": cnnlab_step(build(), x, y, "fp32", False),
        "cnnlab auto": cnnlab_step(build(), x, y, precision, cl),
    }
    if compile:
        variants["compiled"] = cnnlab_step(build(), x, y, precision, cl, compile=True)
    times: dict[str, list[float]] = {k: [] for k in variants}
    warmup: dict[str, float] = {}
    for i in range(steps + 1):
        for k, step in variants.items():
            _sync(device)
            t0 = time.perf_counter()
            step()
            _sync(device)
            if i:  # the first round warms up (and compiles)
                times[k].append(time.perf_counter() - t0)
            else:
                warmup[k] = time.perf_counter() - t0
    rate = {k: batch / statistics.median(v) for k, v in times.items()}
    return {"model": name, "size": size, "auto": f"{precision}{'+CL' if cl else ''}", "why": why, **rate,
            "compile_s": warmup.get("compiled")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None, help="comma-separated presets (default: all)")
    ap.add_argument("--sizes", default="32,64,128")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per variant (after one warm-up round)")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    ap.add_argument("--compile", action="store_true", help="also time cnnlab auto with torch.compile")
    args = ap.parse_args()
    device = pick_device(args.device)
    models = args.models.split(",") if args.models else list(list_presets())
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {device.type}: {where}, batch {args.batch}, "
          f"median of {args.steps} steps, images/s")
    head = f"{'model':<15} {'px':>4} {'auto':>9} {'torch fp32':>11} {'torch auto':>11} {'cnnlab fp32':>12} " \
           f"{'cnnlab auto':>12} {'auto/fp32':>10} {'cnnlab/torch':>13}" + \
           (f" {'compiled':>9} {'comp/auto':>10} {'compile s':>10}" if args.compile else "")
    print(head)
    for name in models:
        for size in (int(s) for s in args.sizes.split(",")):
            r = bench(name, size, args.batch, args.steps, device, compile=args.compile)
            tail = (f" {r['compiled']:>9.0f} {r['compiled'] / r['cnnlab auto']:>9.2f}x {r['compile_s']:>10.1f}"
                    if args.compile else "")
            print(f"{name:<15} {size:>4} {r['auto']:>9} {r['torch fp32']:>11.0f} {r['torch auto']:>11.0f} "
                  f"{r['cnnlab fp32']:>12.0f} {r['cnnlab auto']:>12.0f} {r['cnnlab auto'] / r['torch fp32']:>9.2f}x "
                  f"{r['cnnlab auto'] / r['torch auto']:>12.2f}x" + tail, flush=True)


if __name__ == "__main__":
    main()
