"""Loader throughput: cnnlab's decode-once cache against a plain Pillow + DataLoader pipeline.

For each dataset it prints images per second for

  baseline      torch DataLoader over a Dataset that opens, converts and resizes every file
                with Pillow (full decode, no draft mode), every epoch: what a tutorial does
  epoch 1       cnnlab's make_loader on a cold cache: decode once (draft mode) + one pass
  epoch 2+      the following epochs, served from the memory-mapped cache (shuffled)
  later run     a new make_loader on the same files: cache hit, then one pass

and a single-process decode race on large JPEGs: Pillow draft mode (what cnnlab does:
the JPEG decoder's DCT works at 1/2, 1/4 or 1/8 scale) against a full decode + resize,
for 500x375 photos to 128 and 64 px, noisier 500x375 photos, and 2000x1500 phone photos;
and the batch augmenter's images/s for each preset.

Run (numbers go to benchmarks/RESULTS.md):

    .venv/bin/python benchmarks/bench_loader.py                 # both datasets
    .venv/bin/python benchmarks/bench_loader.py --cifar-images 50000 --workers 2
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from badimages import large_jpeg  # noqa: E402  (the test suite's photo-like JPEG generator)

from cnnlab.data.datasets import discover  # noqa: E402
from cnnlab.data.decode import load_image  # noqa: E402
from cnnlab.data.loader import make_loader  # noqa: E402


class PlainPillow(Dataset):
    """The baseline: open, convert to RGB, resize, to a uint8 CHW tensor, on every access."""

    def __init__(self, items, size):
        self.items, self.size = items, size

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        with Image.open(path) as im:
            im = im.convert("RGB").resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
            x = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
        return x, label


def rate(n, seconds):
    return n / seconds if seconds > 0 else float("inf")


def one_pass(loader) -> int:
    n = 0
    for x, y in loader:
        n += len(y)
    return n


def bench_dataset(name, items, size, workers, batch, epochs):
    print(f"\n== {name}: {len(items)} images -> {size[0]}x{size[1]}, batch {batch}, workers {workers}")
    baseline = DataLoader(PlainPillow(items, size), batch_size=batch, shuffle=True, num_workers=workers)
    t = time.perf_counter()
    n = one_pass(baseline)
    base = rate(n, time.perf_counter() - t)
    print(f"  baseline (Pillow + DataLoader, every epoch)  {base:10,.0f} images/s")

    cache = Path(tempfile.mkdtemp(prefix="cnnlab-bench-cache-"))
    try:
        t = time.perf_counter()
        loader = make_loader(items, size=size, batch_size=batch, shuffle=True, workers=workers,
                             cache_dir=cache, progress=False)
        decode_s = time.perf_counter() - t
        n = one_pass(loader)
        first_s = time.perf_counter() - t
        first = rate(n, first_s)
        print(f"  cnnlab epoch 1 (decode once + pass)          {first:10,.0f} images/s"
              f"   ({decode_s:.1f} s decoding, {len(loader.bad_files)} bad files)")
        times = []
        for e in range(1, epochs):
            loader.set_epoch(e)
            t = time.perf_counter()
            n = one_pass(loader)
            times.append(time.perf_counter() - t)
        later = rate(n, float(np.median(times)))
        print(f"  cnnlab epoch 2+ (memmap cache, median of {len(times)}) {later:10,.0f} images/s"
              f"   = {later / base:,.0f}x baseline")
        t = time.perf_counter()
        again = make_loader(items, size=size, batch_size=batch, shuffle=True, cache_dir=cache, progress=False)
        n = one_pass(again)
        rerun = rate(n, time.perf_counter() - t)
        print(f"  cnnlab later run (cache hit + pass)          {rerun:10,.0f} images/s   hit={again.cache_hit}")
        mb = os.path.getsize(loader.cache_path) / 2**20
        print(f"  cache file {mb:,.1f} MiB")
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return {"baseline": base, "epoch1": first, "epoch2": later, "rerun": rerun}


def bench_draft(paths, size, rounds=5):
    """Best-of-rounds seconds per file for full decode + resize and for cnnlab's draft decode.

    The two are interleaved round by round and timed in CPU seconds of this process
    (time.process_time), so other processes sharing the cores do not skew the ratio.
    """
    def full(p):
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR))

    def draft(p):
        return load_image(p, size)

    best = {"full": float("inf"), "draft": float("inf")}
    for _ in range(rounds):
        for name, fn in (("full", full), ("draft", draft)):
            t = time.process_time()
            for p in paths:
                fn(p)
            best[name] = min(best[name], (time.process_time() - t) / len(paths))
    with Image.open(paths[0]) as im:
        w, h = im.size
        im.draft("RGB", (size[1], size[0]))
        scale = w // im.size[0]
    kb = np.mean([os.path.getsize(p) for p in paths]) / 1024
    print(f"  {w}x{h} ({kb:.0f} KB) -> {size[0]}x{size[1]}: full {1 / best['full']:7,.0f}/s, "
          f"draft (1/{scale} scale) {1 / best['draft']:7,.0f}/s = {best['full'] / best['draft']:.1f}x")
    return best


def bench_augment(size, batch, seconds=3.0):
    """Images/s of the batch augmenter (float [0, 1] in, float out) for each preset."""
    from cnnlab.data.augment import Augmenter

    print(f"\n== augmentation on batches of {batch}x3x{size[0]}x{size[1]} (CPU, {torch.get_num_threads()} threads)")
    x = torch.rand(batch, 3, *size)
    g = torch.Generator().manual_seed(0)
    for preset in ("light", "standard", "strong"):
        aug = Augmenter(preset)
        aug(x, g)
        n, t = 0, time.perf_counter()
        while time.perf_counter() - t < seconds:
            aug(x, g)
            n += batch
        print(f"  {preset:9s} {n / (time.perf_counter() - t):8,.0f} images/s")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cifar", default=os.path.expanduser("~/data/cifar10"), help="unpacked CIFAR-10 JPEG folders")
    ap.add_argument("--cifar-images", type=int, default=10000, help="training images used (50000: all)")
    ap.add_argument("--large", type=int, default=600, help="generated 500x375 JPEGs")
    ap.add_argument("--large-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=4, help="cnnlab epochs (epoch 2+ is their median)")
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
          f"torch {torch.__version__}, Pillow {Image.__version__}")

    if Path(args.cifar).is_dir() and args.cifar_images > 0:
        index = discover(Path(args.cifar) / "train" if (Path(args.cifar) / "train").is_dir() else args.cifar,
                         val_split=0.0)
        items = index.splits["train"]
        rng = np.random.default_rng(0)
        if args.cifar_images < len(items):
            items = [items[i] for i in sorted(rng.choice(len(items), args.cifar_images, replace=False))]
        bench_dataset(f"CIFAR-10 JPEG ({args.cifar})", items, (32, 32), args.workers, args.batch, args.epochs)
    elif args.cifar_images > 0:
        print(f"(no CIFAR-10 at {args.cifar}; unpack ../shared/data/cifar10-jpg.tar.gz there)")

    folder = Path(tempfile.mkdtemp(prefix="cnnlab-bench-jpegs-"))
    try:
        t = time.perf_counter()
        paths = [str(large_jpeg(folder / f"c{i % 2}" / f"{i}.jpg", (375, 500), seed=i)) for i in range(args.large)]
        print(f"\n(generated {len(paths)} 500x375 JPEGs in {time.perf_counter() - t:.1f} s)")
        items = [(p, int(Path(p).parent.name[1:])) for p in paths]
        size = (args.large_size, args.large_size)
        bench_dataset("generated 500x375 JPEGs", items, size, args.workers, args.batch, args.epochs)

        print("\n== JPEG decode in one process, CPU time, best of 5 interleaved rounds: full decode "
              "+ resize vs Pillow draft mode (cnnlab.data.decode.load_image)")
        few = paths[:80]
        bench_draft(few, size)
        bench_draft(few, (64, 64))
        noisy = [str(large_jpeg(folder / "noisy" / f"{i}.jpg", (375, 500), seed=i, noise=12, quality=92))
                 for i in range(80)]
        bench_draft(noisy, size)
        phone = [str(large_jpeg(folder / "phone" / f"{i}.jpg", (1500, 2000), seed=i)) for i in range(16)]
        bench_draft(phone, size)
        bench_augment(size, args.batch)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
