"""The time the training thread spends between epochs (saving the checkpoint and the weights).

On a GPU an airbench epoch may take about a second, so what happens between two epochs on
the training thread (ModelCheckpoint's best/last weights, the resumable checkpoint) is a real
share of the step rate; on the CPU it is a share of short jobs such as the peers harness'.
This trains with ``cnnlab.train`` and a callback that times, after each epoch, from the
end of the epoch's metrics (``on_epoch_end``, called first) to the next epoch's start (or to
the end of ``fit``, which waits for every file to be on disk).

    .venv/bin/python benchmarks/bench_epoch_gap.py ~/data/cifar10-small --model seed --img-size 64 --epochs 3
    .venv/bin/python benchmarks/bench_epoch_gap.py ~/data/cifar10-small --model airbench --img-size 32 --epochs 3

DATA has train/ and test/ (the test images validate, as in the peers harness). Prints one
line: the gaps in ms (the last one includes fit's wait for the files) and the total time.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import cnnlab
from cnnlab.train.callbacks import Callback


class Gap(Callback):
    def __init__(self) -> None:
        self.end: float | None = None
        self.gaps: list[float] = []

    def on_epoch_end(self, trainer) -> None:
        self.end = time.perf_counter()

    def on_epoch_begin(self, trainer) -> None:
        if self.end is not None:
            self.gaps.append(time.perf_counter() - self.end)

    def on_train_end(self, trainer) -> None:
        self.gaps.append(time.perf_counter() - self.end)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--model", default="seed")
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="epoch-gap-")
    data = os.path.join(work, "data")
    os.makedirs(data)
    os.symlink(os.path.abspath(os.path.join(args.data, "train")), os.path.join(data, "train"))
    os.symlink(os.path.abspath(os.path.join(args.data, "test")), os.path.join(data, "val"))
    gap = Gap()
    t0 = time.perf_counter()
    cnnlab.train(data, model=args.model, img_size=args.img_size, epochs=args.epochs, batch_size=args.batch_size,
                 augment="none", patience=0, device="cpu", evaluate=False, cache_dir=os.path.join(work, "cache"),
                 out=os.path.join(work, "runs"), name="r", verbose=False, callbacks=[gap])
    gaps = " ".join(f"{g * 1e3:.0f}" for g in gap.gaps)
    print(f"{args.model} {args.img_size} px: between epochs (ms) {gaps}; total {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
