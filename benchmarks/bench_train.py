"""Training-loop overhead: cnnlab's Trainer against a minimal hand-written PyTorch loop.

Both train the same model on the same in-memory uint8 batches with the same optimiser
(AdamW) and loss (cross-entropy, label smoothing 0.1), normalising on the fly. cnnlab runs
with the callbacks `cnnlab train` uses by default (NaN guard, one-cycle schedule, early
stopping, a non-interactive progress bar); validation is off in both. The two alternate
step by step: a callback runs one minimal step after each cnnlab step, timed on its own and
subtracted from cnnlab's training time (its ``images_per_s`` log: batches, data slicing and
callbacks included), so both see the same load on a shared machine. The figure is the
median over the epochs after a warm-up epoch.

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
from cnnlab.train.loop import Trainer
from cnnlab.train.tensor_loader import TensorLoader


class MinimalLoop:
    """The loop a PyTorch tutorial writes, one step at a time."""

    def __init__(self, model, x, y, batch_size, mean, std):
        self.model, self.x, self.y, self.batch_size, self.mean, self.std = model, x, y, batch_size, mean, std
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        self.order, self.i = torch.randperm(len(x)), 0

    def step(self) -> None:
        if self.i + self.batch_size > len(self.order):
            self.order, self.i = torch.randperm(len(self.x)), 0
        idx = self.order[self.i:self.i + self.batch_size]
        self.i += self.batch_size
        xb = (self.x[idx].float() / 255 - self.mean) / self.std
        loss = F.cross_entropy(self.model(xb), self.y[idx], label_smoothing=0.1)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


def make_cnnlab(model, x, y, batch_size, norm, extra):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    callbacks = [TerminateOnNaN(), LRSchedule("onecycle", 0.25),
                 EarlyStopping("loss", patience=100, restore_best_weights=True),
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

    plain = MinimalLoop(build_model(spec, input=(size, size, channels), classes=10, seed=0),
                        x, y, batch_size, mean, std)
    images = (n_images // batch_size) * batch_size
    plain_seconds: list[float] = []

    class Interleave(Callback):
        """After every cnnlab step, one step of the minimal loop, timed on its own and taken
        out of cnnlab's time: both loops run under the same moment-to-moment load."""

        def on_epoch_begin(self, trainer):
            plain_seconds.append(0.0)

        def on_batch_end(self, trainer):
            t0 = time.perf_counter()
            plain.step()
            plain_seconds[-1] += time.perf_counter() - t0

    ours, loader = make_cnnlab(build_model(spec, input=(size, size, channels), classes=10, seed=0),
                               x, y, batch_size, norm, Interleave())
    ours.fit(loader, None, epochs=epochs + 1)  # epoch 1 warms both up
    # cnnlab's training seconds (images / images_per_s) include the minimal steps: take them out.
    ours_rates = [images / (images / h["images_per_s"] - p) for h, p in zip(ours.history[1:], plain_seconds[1:])]
    plain_rates = [images / p for p in plain_seconds[1:]]
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
          f"{args.size}x{args.size}, batch {args.batch_size}, {args.epochs} epochs each, alternating step by step")
    print(f"{'model':<10} {'minimal img/s':>14} {'cnnlab img/s':>13} {'overhead':>9}")
    for name in args.models.split(","):
        spec = DEMO_MODEL if name == "demo" else name
        r = bench(name, spec, args.size, args.images, args.batch_size, args.epochs,
                  channels=1 if name == "demo" else 3)
        print(f"{r['model']:<10} {r['minimal']:>14.1f} {r['cnnlab']:>13.1f} {r['overhead_pct']:>8.1f}%", flush=True)


if __name__ == "__main__":
    main()
