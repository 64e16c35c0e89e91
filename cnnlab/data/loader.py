"""Batches of uint8 images and int64 labels, fast enough that the CPU trains instead of decoding.

``make_loader(items, size=...)`` decodes every file once (see :mod:`cnnlab.data.cache`) and
then serves batches by slicing the memory-mapped pixels, so epoch 2 onwards never touches
Pillow. Files that cannot be read are skipped, listed in ``loader.bad_files`` with the
reason, and reported on the console; they never end a run.

>>> loader = make_loader(index.splits["train"], size=(128, 128), batch_size=32, shuffle=True)
>>> for epoch in range(10):
...     loader.set_epoch(epoch)           # the order depends only on (seed, epoch)
...     for x, y in loader:               # x: uint8 (N, C, H, W), y: int64 (N,)
...         x = augment(x.float() / 255, generator)   # then normalise, then the model
"""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from cnnlab.data.cache import Decoded, decode_all
from cnnlab.data.decode import RESIZE_POLICIES
from cnnlab.errors import DataError

MAX_LISTED = 10  # bad files printed on the console; all of them are in loader.bad_files


def as_size(size: int | Sequence[int]) -> tuple[int, int]:
    """128 -> (128, 128); (h, w) stays."""
    if isinstance(size, int):
        return (size, size)
    h, w = (int(v) for v in size)
    return (h, w)


SHUFFLE, TRAINING = 0, 1  # the random streams of an epoch: the loader's order; dropout and augmentation
SUBSET = 2  # the stream that draws a fixed validation subset (ImageLoader.subset)


def epoch_seed(seed: int, epoch: int, rank: int = 0, stream: int = SHUFFLE) -> int:
    """A 64-bit seed from (seed, epoch, process rank, stream) alone: the one formula for all of them.

    numpy's SeedSequence mixes the four numbers so that neighbouring epochs or ranks give
    unrelated streams. (Rank 0's shuffle is SeedSequence([seed, epoch]), as it always was.)
    """
    entropy = [int(seed), int(epoch), int(rank), int(stream)]
    while len(entropy) > 2 and entropy[-1] == 0:
        entropy.pop()
    state = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
    return int(state[0]) << 32 | int(state[1])


def epoch_generator(seed: int, epoch: int, rank: int = 0, stream: int = SHUFFLE) -> torch.Generator:
    """A CPU torch generator seeded by :func:`epoch_seed`."""
    return torch.Generator().manual_seed(epoch_seed(seed, epoch, rank, stream))


class ImageLoader:
    """Iterate to get ``(x, y)``: x uint8 (N, C, H, W), y int64 (N,). One pass is one epoch.

    Attributes: ``num_samples`` (usable images), ``bad_files`` [(path, reason)], ``items``
    [(path, label)] of the usable images, ``labels`` (int64 array), ``images`` (the uint8
    array behind the batches), ``cache_path`` (the .npy file, or None), ``cache_hit``.
    """

    def __init__(self, items: list[tuple[str, int]], decoded: Decoded, *, batch_size: int,
                 shuffle: bool, seed: int, balanced: bool, drop_last: bool):
        row_of = {p: i for i, p in enumerate(decoded.paths)}
        rows = [row_of[str(p)] for p, _ in items]
        bad = decoded.bad
        keep = [i for i, r in enumerate(rows) if r not in bad]
        self.items = [(str(items[i][0]), int(items[i][1])) for i in keep]
        self.bad_files = sorted({(decoded.paths[r], bad[r]) for r in rows if r in bad})
        self.rows = np.asarray([rows[i] for i in keep], dtype=np.int64)
        self.labels = np.asarray([y for _, y in self.items], dtype=np.int64)
        self.images = decoded.images
        self.cache_path = decoded.path
        self.cache_hit = decoded.hit
        self.decode_seconds = decoded.seconds
        self.num_samples = len(self.items)
        self.batch_size = int(batch_size)
        self.shuffle, self.seed, self.balanced, self.drop_last = shuffle, int(seed), balanced, drop_last
        self.epoch = 0

    def __len__(self) -> int:
        """Batches per epoch."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Use epoch's order next (iterating without calling this moves on one epoch each time)."""
        self.epoch = int(epoch)

    def order(self, epoch: int) -> np.ndarray:
        """Positions into ``items`` for one epoch: in order, shuffled, or class-balanced.

        The balanced sampler draws ``num_samples`` positions with replacement, each class
        equally likely, as torch's WeightedRandomSampler does.
        """
        n = self.num_samples
        if not (self.shuffle or self.balanced) or n == 0:
            return np.arange(n)
        g = epoch_generator(self.seed, epoch)
        if self.balanced:
            counts = np.bincount(self.labels)
            weights = torch.from_numpy(1.0 / counts[self.labels])
            return torch.multinomial(weights, n, replacement=True, generator=g).numpy()
        return torch.randperm(n, generator=g).numpy()

    def batch(self, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The (x, y) batch of these positions (no Pillow: a copy out of the pixel array)."""
        x = torch.from_numpy(np.ascontiguousarray(self.images[self.rows[positions]]))
        y = torch.from_numpy(self.labels[positions])
        return x, y

    def subset(self, n: int, seed: int = 0) -> "ImageLoader":
        """A loader over ``n`` of these images, drawn at random once (by ``seed``), in their order.

        The pixels are shared, not copied: validating on a fixed subset costs nothing to make.
        """
        if n >= self.num_samples:
            return self
        g = epoch_generator(seed, 0, stream=SUBSET)
        keep = np.sort(torch.randperm(self.num_samples, generator=g)[:n].numpy())
        sub = copy.copy(self)
        sub.items = [self.items[i] for i in keep]
        sub.rows, sub.labels = self.rows[keep], self.labels[keep]
        sub.num_samples = len(keep)
        return sub

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order(self.epoch)
        self.epoch += 1
        for b in range(len(self)):
            yield self.batch(order[b * self.batch_size:(b + 1) * self.batch_size])

    def __repr__(self) -> str:
        where = f"cache {self.cache_path}" if self.cache_path else "in memory"
        return (f"ImageLoader({self.num_samples} images, {len(self)} batches of {self.batch_size}, "
                f"{len(self.bad_files)} bad files, {where})")


def make_loader(
    items: Sequence[tuple[str | Path, int]],
    *,
    size: int | Sequence[int],
    channels: int = 3,
    resize: str = "stretch",
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int = 0,
    workers: int = 0,
    cache_dir: str | Path | None | bool = None,
    balanced: bool = False,
    drop_last: bool = False,
    progress: bool | None = None,
    report_bad: bool = True,
) -> ImageLoader:
    """Decode ``items`` [(path, label)] once at ``size`` and return a loader over them.

    size: (height, width) or one int. channels: 3 (RGB) or 1 (grayscale). resize:
    "stretch", "crop" (centre crop) or "letterbox" (keep aspect ratio, pad). workers:
    processes for the first decode (0: this process). cache_dir: None for the default
    (``$CNNLAB_CACHE`` or ``~/.cache/cnnlab``), a folder, or False to keep pixels in memory
    only. balanced: sample classes equally often (with replacement). progress: show a bar
    (None: only on a terminal). report_bad: print the unreadable files on stderr.
    """
    size = as_size(size)
    if resize not in RESIZE_POLICIES:
        raise DataError(f"resize policy must be one of {', '.join(RESIZE_POLICIES)}, got {resize!r}")
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    if min(size) < 1 or batch_size < 1:
        raise DataError(f"image size and batch size must be positive, got size {size}, batch {batch_size}")
    items = [(str(Path(p).expanduser().absolute()), int(y)) for p, y in items]
    decoded = decode_all([p for p, _ in items], size, channels, resize, cache_dir, workers, progress)
    loader = ImageLoader(items, decoded, batch_size=batch_size, shuffle=shuffle, seed=seed,
                         balanced=balanced, drop_last=drop_last)
    if report_bad and loader.bad_files:
        print_bad_files(loader.bad_files, len(items))
    return loader


def print_bad_files(bad: list[tuple[str, str]], total: int, file=None) -> None:
    """'skipped 3 of 500 files that cannot be read:' and the first few with their reasons."""
    out = file or sys.stderr
    print(f"cnnlab: skipped {len(bad)} of {total} files that cannot be read:", file=out)
    for path, reason in bad[:MAX_LISTED]:
        print(f"  {path}: {reason}", file=out)
    if len(bad) > MAX_LISTED:
        print(f"  ... and {len(bad) - MAX_LISTED} more", file=out)
