"""Training-loop overhead: cnnlab's Trainer against a minimal hand-written PyTorch loop.

Both train the same model on the same in-memory uint8 batches with the same optimiser
(AdamW) and loss (cross-entropy, label smoothing 0.1), normalising on the fly. cnnlab runs
with the callbacks `cnnlab train` uses by default (NaN guard, one-cycle schedule, early
stopping, a non-interactive progress bar); validation is off in both. The two alternate,
epoch by epoch (a callback runs one minimal epoch after each cnnlab epoch), so a busy
machine slows both alike; the figure is the median over epochs after a warm-up epoch.
cnnlab's rate is its own ``images_per_s`` log: training images over the time of its
training batches, data slicing and callbacks included.

    .venv/bin/python benchmarks/bench_train.py                  # the demo CNN and vgg_bn, 32x32
    .venv/bin/python benchmarks/bench_train.py --models vgg_bn --images 2048 --epochs 5

Target: cnnlab's steady-state images/s within 3 % of the minimal loop.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import torch
import torch.nn.functional as F

from cnnlab.data.normalize import Normalization
from cnnlab.model.build import build_model
from cnnlab.train.callbacks import Callback, EarlyStopping, LRSchedule, ProgressBar, TerminateOnNaN
from cnnlab.train.demo import DEMO_MODEL
from cnnlab.train.loop import TensorLoader, Trainer


def minimal_epoch(model, opt, x, y, batch_size, mean, std, epoch) -> float:
    """The loop a PyTorch tutorial writes; returns seconds."""
    model.train()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
    t0 = time.perf_counter()
    for i in range(0, len(x) - batch_size + 1, batch_size):
        idx = order[i:i + batch_size]
        xb = (x[idx].float() / 255 - mean) / std
        loss = F.cross_entropy(model(xb), y[idx], label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def make_cnnlab(model, x, y, batch_size, norm, extra):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    callbacks = [TerminateOnNaN(), LRSchedule("onecycle", 0.25),
                 EarlyStopping("train_loss", patience=100, restore_best_weights=True),
                 ProgressBar(interactive=False, file=io.StringIO()), extra]
    trainer = Trainer(model, opt, loss_fn=torch.nn.CrossEntropyLoss(label_smoothing=0.1),
                      normalization=norm, callbacks=callbacks)
    return trainer, TensorLoader(x, y, batch_size, drop_last=True)


def bench(name, spec, size, n_images, batch_size, epochs, channels=3) -> dict:
    torch.manual_seed(0)
    x = torch.randint(0, 256, (n_images, channels, size, size), dtype=torch.uint8)
    y = torch.randint(0, 10, (n_images,))
    norm = Normalization((0.5,) * channels, (0.25,) * channels)
    mean, std = torch.tensor(norm.mean).view(1, -1, 1, 1), torch.tensor(norm.std).view(1, -1, 1, 1)

    plain = build_model(spec, input=(size, size, channels), classes=10, seed=0)
    plain_opt = torch.optim.AdamW(plain.parameters(), lr=1e-3)
    images = (n_images // batch_size) * batch_size
    plain_rates: list[float] = []

    class Interleave(Callback):
        """After each cnnlab epoch (not timed by it), one epoch of the minimal loop."""

        def on_epoch_end(self, trainer):
            plain_rates.append(images / minimal_epoch(plain, plain_opt, x, y, batch_size, mean, std,
                                                      trainer.epoch))

    ours, loader = make_cnnlab(build_model(spec, input=(size, size, channels), classes=10, seed=0),
                               x, y, batch_size, norm, Interleave())
    ours.fit(loader, None, epochs=epochs + 1)  # epoch 1 warms both up
    ours_rates = [h["images_per_s"] for h in ours.history[1:]]
    plain_rates = plain_rates[1:]
    p, o = statistics.median(plain_rates), statistics.median(ours_rates)
    return {"model": name, "size": size, "batch": batch_size, "minimal": p, "cnnlab": o,
            "overhead_pct": 100 * (p - o) / p}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="demo,vgg_bn", help="comma-separated: demo, or preset names")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=5, help="measured epochs per loop (after one warm-up)")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.images} images "
          f"{args.size}x{args.size}, batch {args.batch_size}, {args.epochs} epochs each, interleaved")
    print(f"{'model':<10} {'minimal img/s':>14} {'cnnlab img/s':>13} {'overhead':>9}")
    for name in args.models.split(","):
        spec = DEMO_MODEL if name == "demo" else name
        r = bench(name, spec, args.size, args.images, args.batch_size, args.epochs,
                  channels=1 if name == "demo" else 3)
        print(f"{r['model']:<10} {r['minimal']:>14.1f} {r['cnnlab']:>13.1f} {r['overhead_pct']:>8.1f}%", flush=True)


if __name__ == "__main__":
    main()
